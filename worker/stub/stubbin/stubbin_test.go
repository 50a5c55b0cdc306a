package stubbin

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rebuild jobgate-stub.gz from the current sources")

const (
	stubPkg    = "github.com/jobgate/jobgate/cmd/jobgate-stub"
	sourceFile = "jobgate-stub.source"
)

// sourceHash hashes every non-standard Go file the stub is built from
// (the toolchain version is left out: a Go upgrade need not regenerate).
func sourceHash(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if not .Standard}}{{.ImportPath}}|{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{end}}`, stubPkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", stubPkg, err)
	}
	h := sha256.New()
	lines := strings.Fields(string(out))
	sort.Strings(lines)
	for _, l := range lines {
		parts := strings.Split(l, "|")
		files := parts[2:]
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(parts[1], f))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(h, "%s/%s %d\n", parts[0], f, len(b))
			h.Write(b)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// TestEmbeddedStubIsCurrent fails when the stub's sources changed since
// jobgate-stub.gz was built; with -update (go generate) it rebuilds it.
func TestEmbeddedStubIsCurrent(t *testing.T) {
	hash := sourceHash(t)
	if *update {
		bin := filepath.Join(t.TempDir(), Name)
		build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", bin, stubPkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(raw)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("jobgate-stub.gz", gz.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sourceFile, []byte(hash+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("jobgate-stub: %d bytes, %d gzipped", len(raw), gz.Len())
		return
	}
	want, err := os.ReadFile(sourceFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(want)); got != hash {
		t.Fatalf("jobgate-stub.gz was built from other sources (%s; now %s): run go generate ./worker/stub/stubbin", got, hash)
	}
}

// The installed stub is a static executable that behaves as the stub:
// usage without its argument, 127 for a command the image lacks.
func TestInstalledStubIsStaticAndRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, err := Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s needs a dynamic loader", path)
		}
	}
	f.Close()
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{nil, 2, "usage"},
		{[]string{"_jobgate_stub", "/no/such/command"}, 127, "no/such/command"},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(path, c.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != c.code || !strings.Contains(stderr.String(), c.says) {
			t.Fatalf("%v: %v, stderr %q; want exit %d saying %q", c.args, err, stderr.String(), c.code, c.says)
		}
	}
	// A second install over an identical copy leaves it as it is.
	before, _ := os.Stat(path)
	if _, err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Fatal("an identical stub was rewritten")
	}
}
