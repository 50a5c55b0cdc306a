package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/jobgate/jobgate/internal/imagebuild"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// `jobgate pull` downloads and unpacks into the worker's containerd and
// prints a bar per blob with bytes/total; image policy errors are clear.
func TestPullShowsProgressAndUnpacks(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/pullcli:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	cfg := s.Config(t, "127.0.0.1:1")
	path := testenv.WriteConfig(t, cfg)
	out, err := exec.Command(s.JobgateBin, "pull", ref, "--config", path).CombinedOutput()
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"sha256:", "[==============================]", "total ", "unpacked"} {
		if !strings.Contains(text, want) {
			t.Fatalf("output lacks %q:\n%s", want, text)
		}
	}
	ctd := testenv.OpenContainerd(t, cfg.Containerd.Address, cfg.Containerd.Namespace)
	if _, found, err := ctd.ImageLabels(context.Background(), ref); err != nil || !found {
		t.Fatalf("image not in containerd after pull: found %t, %v", found, err)
	}

	// An arm64-only image is refused before any layer is fetched.
	arm := s.Registry + "/test/pullarm:1"
	img, err := imagebuild.RandomImage(1024, "linux", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagebuild.Push(arm, img); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(s.JobgateBin, "pull", arm, "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no linux/amd64 image") {
		t.Fatalf("arm-only pull: %v\n%s", err, out)
	}
}
