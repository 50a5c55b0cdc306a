// Package testjob builds the scriptable job body (./body) into an image
// for integration tests.
package testjob

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/jobgate/jobgate/internal/imagebuild"
)

// ImageEnv is the env baked into the test image.
var ImageEnv = []string{"PATH=/bin", "IMAGE_ONLY=from-image", "OVERRIDE_ME=image"}

var build struct {
	once sync.Once
	bin  []byte
	err  error
}

// Binary returns the statically linked body, built once per process.
func Binary() ([]byte, error) {
	build.once.Do(func() {
		_, self, _, _ := runtime.Caller(0)
		dir, err := os.MkdirTemp("", "testjob-")
		if err != nil {
			build.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "job")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
		cmd.Dir = filepath.Join(filepath.Dir(self), "body")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("build test job: %v: %s", err, b)
			return
		}
		build.bin, build.err = os.ReadFile(out)
	})
	return build.bin, build.err
}

// Push builds the body image (entrypoint /bin/job) and pushes it to ref.
func Push(ref string) (digest string, err error) { return PushWithEnv(ref, nil) }

// PushWithEnv is Push with extra image env.
func PushWithEnv(ref string, extraEnv []string) (digest string, err error) {
	bin, err := Binary()
	if err != nil {
		return "", err
	}
	img, err := imagebuild.Build(imagebuild.Spec{
		Files:      map[string]imagebuild.File{"bin/job": {Content: bin, Mode: 0o755}},
		Entrypoint: []string{"/bin/job"},
		Env:        append(append([]string{}, ImageEnv...), extraEnv...),
	})
	if err != nil {
		return "", err
	}
	return imagebuild.Push(ref, img)
}
