// Package imagebuild makes small job images in Go with
// go-containerregistry (no Docker needed): a static binary plus config,
// pushed to a registry. The set-up scripts use it for the sample job and
// the tests for their job bodies and policy fixtures.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one file of the image's single layer.
type File struct {
	Content []byte
	Mode    int64
}

// Spec describes an image.
type Spec struct {
	Files      map[string]File // path (no leading /) → file
	Entrypoint []string
	Cmd        []string
	Env        []string
	OS, Arch   string // default linux/amd64
}

// Build returns the image.
func Build(s Spec) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{"tmp": true}
	paths := make([]string, 0, len(s.Files))
	for p := range s.Files {
		paths = append(paths, p)
		for d := p; strings.Contains(d, "/"); {
			d = d[:strings.LastIndex(d, "/")]
			dirs[d] = true
		}
	}
	sort.Strings(paths)
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	for _, d := range dirList {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode}); err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		f := s.Files[p]
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(f.Content))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if s.OS != "" {
		cf.OS = s.OS
	}
	if s.Arch != "" {
		cf.Architecture = s.Arch
	}
	cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Env = s.Entrypoint, s.Cmd, s.Env
	return mutate.ConfigFile(img, cf)
}

// Push writes img to ref (plain HTTP for loopback registries).
func Push(ref string, img v1.Image) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	if err := remote.Write(r, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

// PushIndex writes a multi-platform index of the given images to ref.
func PushIndex(ref string, imgs map[string]v1.Image) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	keys := make([]string, 0, len(imgs))
	for k := range imgs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var adds []mutate.IndexAddendum
	for _, platform := range keys {
		os, arch, _ := strings.Cut(platform, "/")
		adds = append(adds, mutate.IndexAddendum{Add: imgs[platform], Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	if err := remote.WriteIndex(r, idx); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// RandomImage is an image of random bytes (nothing runnable): for
// platform and size fixtures.
func RandomImage(size int64, osName, arch string) (v1.Image, error) {
	img, err := random.Image(size, 1)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	return mutate.ConfigFile(img, cf)
}

// PushSchema1 stores a Docker schema 1 manifest under ref, for the test
// that such images are refused (registries still serve them).
func PushSchema1(host, repo, tag string) error {
	body := fmt.Sprintf(`{"schemaVersion":1,"name":%q,"tag":%q,"architecture":"amd64","fsLayers":[],"history":[]}`, repo, tag)
	return PushRawManifest(host, repo, tag, "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(body))
}

// PushRawManifest PUTs a manifest as given (fixtures that no builder
// would make, e.g. layer sizes that do not match any blob).
func PushRawManifest(host, repo, tag, mediaType string, body []byte) error {
	req, err := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, tag), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("push manifest %s/%s:%s: %w", host, repo, tag, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("push manifest: %s: %s", resp.Status, b)
	}
	return nil
}
