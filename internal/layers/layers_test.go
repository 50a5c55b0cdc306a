package layers

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// TestNoPackageImportsAPackageAboveIt lists every package with its
// transitive dependencies (go list -deps) and checks each against
// Layers: all of a package's dependencies in the module are in lower
// layers (or its own, for library layers), and none is test support.
func TestNoPackageImportsAPackageAboveIt(t *testing.T) {
	t.Parallel()
	rank := map[string]int{}
	library := map[int]bool{}
	for i, l := range Layers {
		library[i] = l.Library
		for _, p := range l.Packages {
			rank[p] = i
		}
	}
	support := map[string]bool{}
	for _, p := range TestSupport {
		support[p] = true
	}
	// One line per package: its path, then every module package it
	// depends on, directly or not.
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if eq .Module.Path "`+Module+`"}}{{.ImportPath}}{{range .Deps}} {{.}}{{end}}{{end}}{{end}}`, "./...")
	cmd.Dir = testenv.ModuleRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], Module), "/")
		if support[pkg] {
			continue
		}
		r, ok := rank[pkg]
		if !ok {
			t.Errorf("package %s is in no layer: add it to Layers (internal/layers/doc.go) and docs/ARCHITECTURE.md", pkg)
			continue
		}
		seen++
		for _, dep := range fields[1:] {
			rel, inModule := strings.CutPrefix(dep, Module+"/")
			if !inModule {
				continue
			}
			if support[rel] {
				t.Errorf("%s (%s) depends on test support %s", pkg, Layers[r].Name, rel)
				continue
			}
			dr, ok := rank[rel]
			switch {
			case !ok:
				t.Errorf("%s depends on %s, which is in no layer", pkg, rel)
			case dr > r:
				t.Errorf("%s (%s) depends on %s (%s), a layer above it", pkg, Layers[r].Name, rel, Layers[dr].Name)
			case dr == r && !library[r]:
				t.Errorf("%s depends on %s, both %s: only library layers import within themselves", pkg, rel, Layers[r].Name)
			}
		}
	}
	if seen < 30 {
		t.Fatalf("checked only %d packages: go list output not understood:\n%s", seen, out)
	}
}
