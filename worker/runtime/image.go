package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/platforms"
	dockerconfig "github.com/docker/cli/cli/config"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image policy errors. They are permanent: retrying cannot help.
var (
	ErrImageNotFound = errors.New("image not found")
	ErrPlatform      = errors.New("no linux/amd64 image")
	ErrSchema1       = errors.New("manifest schema 1 not supported: use Docker v2 schema 2 or OCI")
	ErrImageTooLarge = errors.New("image too large")
	ErrMediaType     = errors.New("unsupported manifest media type")
	ErrUnauthorized  = errors.New("registry refused the credentials")
)

// IsPermanent reports whether a pull error will not pass on retry.
func IsPermanent(err error) bool {
	for _, e := range []error{ErrImageNotFound, ErrPlatform, ErrSchema1, ErrImageTooLarge, ErrMediaType, ErrUnauthorized} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// maxManifestBytes bounds manifests and configs read during preflight.
const maxManifestBytes = 4 << 20

// Image is a pulled, unpacked image.
type Image struct {
	Ref    string
	Digest string // the reference's target: index or manifest digest
	Env    []string
	img    containerd.Image
}

func (r *Runtime) hosts(host string) ([]docker.RegistryHost, error) {
	reg := r.opts.Registries[host]
	plain := docker.MatchLocalhost
	if reg.Insecure {
		plain = func(string) (bool, error) { return true, nil }
	}
	auth := docker.NewDockerAuthorizer(docker.WithAuthCreds(func(string) (string, string, error) {
		if reg.Username != "" {
			return reg.Username, reg.Password, nil
		}
		return r.dockerConfigCreds(host)
	}))
	return docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(plain), docker.WithAuthorizer(auth))(host)
}

// dockerConfigCreds reads host's credentials from the docker config.json
// (re-read each time, so rotated credentials apply without a restart).
func (r *Runtime) dockerConfigCreds(host string) (string, string, error) {
	if r.opts.DockerConfig == "" {
		return "", "", nil
	}
	f, err := os.Open(r.opts.DockerConfig)
	if err != nil {
		return "", "", fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return "", "", fmt.Errorf("docker config %s: %w", r.opts.DockerConfig, err)
	}
	ac, err := cf.GetAuthConfig(host)
	if err != nil {
		return "", "", fmt.Errorf("docker config %s: %w", r.opts.DockerConfig, err)
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}

func (r *Runtime) resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{Hosts: r.hosts})
}

// EnsureImage returns ref pulled and unpacked, pulling it if the registry's
// digest is not here yet. Concurrent callers share one pull per digest.
// When the registry cannot be reached, a local copy of ref is used.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) (*Image, error) {
	return r.EnsureImageProgress(ctx, ref, nil)
}

type tagCheck struct {
	img *Image
	at  time.Time
}

// LayerProgress is how far one blob of a pull has come.
type LayerProgress struct {
	Digest string
	Done   int64 // bytes downloaded
	Total  int64
}

// progressEvery is how often a pull reports progress.
const progressEvery = 200 * time.Millisecond

// EnsureImageProgress is EnsureImage that calls report with every blob's
// progress while it downloads (and once at the end), when report is set.
func (r *Runtime) EnsureImageProgress(ctx context.Context, ref string, report func([]LayerProgress)) (got *Image, _ error) {
	ctx = r.ctx(ctx)
	// A tag checked moments ago: trust it (bursts of events need one
	// registry round trip, not one each).
	// The image found unpacked then is used as is.
	if c, ok := r.checked.Load(ref); ok && r.opts.TagRecheck > 0 {
		if c := c.(tagCheck); r.opts.Clock.Since(c.at) < r.opts.TagRecheck && c.img != nil {
			return c.img, nil
		}
	}
	res := r.resolver()
	_, desc, err := res.Resolve(ctx, ref)
	if err == nil {
		defer func() {
			if got != nil && got.Digest == desc.Digest.String() {
				r.checked.Store(ref, tagCheck{img: got, at: r.opts.Clock.Now()})
			}
		}()
	}
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("pull %s: %w: %v", ref, ErrImageNotFound, err)
		}
		if strings.Contains(err.Error(), "401 Unauthorized") || strings.Contains(err.Error(), "403 Forbidden") {
			return nil, fmt.Errorf("pull %s: %w: %v", ref, ErrUnauthorized, err)
		}
		if local, lerr := r.localImage(ctx, ref, ""); lerr == nil {
			return local, nil
		}
		return nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	if local, err := r.localImage(ctx, ref, desc.Digest.String()); err == nil {
		return local, nil
	}
	v, err, _ := r.pulls.Do(ref+"@"+desc.Digest.String(), func() (any, error) {
		// The pull belongs to every waiter, not to the first caller.
		pctx := context.WithoutCancel(ctx)
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			pctx, cancel = context.WithDeadline(pctx, dl)
			defer cancel()
		}
		blobs, err := r.preflight(pctx, res, ref, desc)
		if err != nil {
			return nil, err
		}
		if report != nil {
			stop := r.watchProgress(pctx, blobs, report)
			defer stop()
		}
		pull := func() (containerd.Image, error) {
			return r.client.Pull(pctx, ref,
				containerd.WithResolver(res),
				containerd.WithPullUnpack,
				containerd.WithPullSnapshotter(r.opts.Snapshotter),
				containerd.WithPlatformMatcher(platforms.OnlyStrict(amd64)),
			)
		}
		img, err := pull()
		if err != nil && r.abortIngests(pctx, blobs) {
			// A download cut off by a crash leaves its partial ingest,
			// which containerd resumes with a Range request; a registry
			// that refuses ranges (416) would fail every pull of this
			// image from then on. Started over, it succeeds.
			img, err = pull()
		}
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
		return r.describe(pctx, ref, img)
	})
	if err != nil {
		return nil, err
	}
	return v.(*Image), nil
}

// abortIngests discards the partial downloads of blobs (their content
// ingests) and says whether there were any. Pulls of one image are one
// at a time here (r.pulls), so none is another pull's live download.
func (r *Runtime) abortIngests(ctx context.Context, blobs []ocispec.Descriptor) bool {
	cs := r.client.ContentStore()
	aborted := false
	for _, b := range blobs {
		key := remotes.MakeRefKey(ctx, b)
		if _, err := cs.Status(ctx, key); err != nil {
			continue
		}
		if err := cs.Abort(ctx, key); err == nil {
			aborted = true
		}
	}
	return aborted
}

// localImage returns ref if it is here and unpacked (and, when digest is
// set, still points at digest).
func (r *Runtime) localImage(ctx context.Context, ref, digest string) (*Image, error) {
	img, err := r.client.GetImage(ctx, ref)
	if err != nil {
		return nil, err
	}
	if digest != "" && img.Target().Digest.String() != digest {
		return nil, fmt.Errorf("%s: local copy is outdated", ref)
	}
	ok, err := img.IsUnpacked(ctx, r.opts.Snapshotter)
	if err != nil || !ok {
		return nil, fmt.Errorf("%s: not unpacked", ref)
	}
	return r.describe(ctx, ref, img)
}

func (r *Runtime) describe(ctx context.Context, ref string, img containerd.Image) (*Image, error) {
	d := img.Target().Digest.String()
	if env, ok := r.envCache.Load(d); ok {
		return &Image{Ref: ref, Digest: d, Env: env.([]string), img: img}, nil
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", ref, err)
	}
	r.envCache.Store(d, spec.Config.Env)
	return &Image{Ref: ref, Digest: d, Env: spec.Config.Env, img: img}, nil
}

// preflight applies the image policy from the manifests alone, before any
// layer is downloaded: no schema 1, linux/amd64 only (also for
// single-manifest images, whose config is read), compressed size below the
// limit.
//
// It returns the blobs a pull downloads (config and layers).
func (r *Runtime) preflight(ctx context.Context, res remotes.Resolver, ref string, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	f, err := res.Fetcher(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("fetcher %s: %w", ref, err)
	}
	manifest := desc
	single := true
	switch desc.MediaType {
	case images.MediaTypeDockerSchema1Manifest:
		return nil, fmt.Errorf("pull %s: %w", ref, ErrSchema1)
	case ocispec.MediaTypeImageIndex, images.MediaTypeDockerSchema2ManifestList:
		var idx ocispec.Index
		if err := r.fetchJSON(ctx, f, desc, &idx); err != nil {
			return nil, fmt.Errorf("read index of %s: %w", ref, err)
		}
		match := platforms.OnlyStrict(amd64)
		var found []string
		ok := false
		for _, m := range idx.Manifests {
			if m.Platform == nil {
				continue
			}
			found = append(found, platforms.Format(*m.Platform))
			if match.Match(*m.Platform) {
				manifest, ok = m, true
				break
			}
		}
		if !ok {
			sort.Strings(found)
			return nil, fmt.Errorf("pull %s: %w (platforms found: %s)", ref, ErrPlatform, strings.Join(found, ", "))
		}
		single = false
	case ocispec.MediaTypeImageManifest, images.MediaTypeDockerSchema2Manifest:
	default:
		return nil, fmt.Errorf("pull %s: %w: %s", ref, ErrMediaType, desc.MediaType)
	}
	if manifest.MediaType == images.MediaTypeDockerSchema1Manifest {
		return nil, fmt.Errorf("pull %s: %w", ref, ErrSchema1)
	}
	var m ocispec.Manifest
	if err := r.fetchJSON(ctx, f, manifest, &m); err != nil {
		return nil, fmt.Errorf("read manifest of %s: %w", ref, err)
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	if size >= r.opts.MaxImageBytes {
		return nil, fmt.Errorf("pull %s: %w: compressed size %d bytes, limit %d", ref, ErrImageTooLarge, size, r.opts.MaxImageBytes)
	}
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	if single {
		var cfg ocispec.Image
		if err := r.fetchJSON(ctx, f, m.Config, &cfg); err != nil {
			return nil, fmt.Errorf("read config of %s: %w", ref, err)
		}
		p := ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		if !platforms.OnlyStrict(amd64).Match(p) {
			return nil, fmt.Errorf("pull %s: %w (platform found: %s)", ref, ErrPlatform, platforms.Format(p))
		}
	}
	return blobs, nil
}

// fetchJSON reads a manifest, index or config blob: from the local content
// store when it is there (blobs are content-addressed), else the registry.
func (r *Runtime) fetchJSON(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor, v any) error {
	if desc.Size > maxManifestBytes {
		return fmt.Errorf("%s is %d bytes, over %d", desc.Digest, desc.Size, maxManifestBytes)
	}
	if b, err := content.ReadBlob(ctx, r.client.ContentStore(), desc); err == nil {
		return json.Unmarshal(b, v)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// watchProgress reports the blobs' progress every progressEvery until the
// returned stop is called (which reports once more). A blob is done when
// the content store has it, in progress while an ingest for it is open.
func (r *Runtime) watchProgress(ctx context.Context, blobs []ocispec.Descriptor, report func([]LayerProgress)) (stop func()) {
	cs := r.client.ContentStore()
	snapshot := func() []LayerProgress {
		active := map[string]int64{}
		if sts, err := cs.ListStatuses(ctx); err == nil {
			for _, st := range sts {
				// Ingest refs end with the digest (e.g. "layer-sha256:…").
				if i := strings.LastIndex(st.Ref, "sha256:"); i >= 0 {
					active[st.Ref[i:]] = st.Offset
				}
			}
		}
		out := make([]LayerProgress, len(blobs))
		for i, b := range blobs {
			out[i] = LayerProgress{Digest: b.Digest.String(), Total: b.Size}
			if _, err := cs.Info(ctx, b.Digest); err == nil {
				out[i].Done = b.Size
			} else if off, ok := active[b.Digest.String()]; ok {
				out[i].Done = off
			}
		}
		return out
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				report(snapshot())
				return
			case <-t.C:
				report(snapshot())
			}
		}
	}()
	return func() { close(done); <-finished }
}
