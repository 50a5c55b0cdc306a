// Package stubbin carries jobgate-stub (cmd/jobgate-stub) built static,
// gzipped, inside every jobgate binary. Provisioned instances bind-mount
// the stub into job containers, where only a static program runs; a
// plain `go install` of jobgate is dynamic (cgo), so the stub cannot be
// jobgate itself. The embedded copy is regenerated with go generate and
// a test fails when the stub's sources change without it.
package stubbin

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

//go:generate go test -run TestEmbeddedStubIsCurrent -update .

//go:embed jobgate-stub.gz
var compressed []byte

// Name is the stub's file name in the directory Install writes to.
const Name = "jobgate-stub"

// Binary returns the stub executable.
func Binary() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return nil, fmt.Errorf("embedded %s: %w", Name, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("embedded %s: %w", Name, err)
	}
	return b, nil
}

// Install writes the stub to dir/jobgate-stub (mode 0755) unless an
// identical copy is there, and returns its path. The file is replaced by
// rename, so instances that have the old one mounted keep it.
func Install(dir string) (string, error) {
	bin, err := Binary()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, Name)
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, bin) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, Name+".*")
	if err != nil {
		return "", fmt.Errorf("install %s: %w", Name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(bin); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install %s: %w", Name, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install %s: %w", Name, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("install %s: %w", Name, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("install %s: %w", Name, err)
	}
	return path, nil
}
