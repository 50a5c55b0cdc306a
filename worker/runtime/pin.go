package runtime

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/platforms"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LabelPinned marks an image jobgate keeps for accelerated functions.
const LabelPinned = "jobgate.pinned"

// pinLeasePrefix names the leases that pin accelerated images.
const pinLeasePrefix = "jobgate-pin-"

// Pin keeps img's content and unpacked snapshots from containerd's garbage
// collector, whatever happens to the image record (a `ctr images rm`, a
// tag moved elsewhere): a lease without expiry holds the image's target
// and every blob under it, and its top snapshot (whose parents follow). The image also gets LabelPinned, so
// operators can see why it stays. Re-pinning replaces the lease's content.
func (r *Runtime) Pin(ctx context.Context, key string, img *Image) error {
	ctx = r.ctx(ctx)
	diffIDs, err := img.img.RootFS(ctx)
	if err != nil {
		return fmt.Errorf("pin %s: rootfs: %w", img.Ref, err)
	}
	ls := r.client.LeasesService()
	id := pinLeasePrefix + key
	_ = ls.Delete(ctx, leases.Lease{ID: id})
	l, err := ls.Create(ctx, leases.WithID(id), leases.WithLabels(map[string]string{"jobgate.image": img.Ref}))
	if err != nil {
		return fmt.Errorf("pin %s: lease: %w", img.Ref, err)
	}
	// Every blob explicitly (index, manifest, config, layers): the GC's
	// reference labels alone did not keep them all (a removed image's
	// blob was fetched again).
	var res []leases.Resource
	cs := r.client.ContentStore()
	collect := images.HandlerFunc(func(_ context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		res = append(res, leases.Resource{ID: d.Digest.String(), Type: "content"})
		return nil, nil
	})
	if err := images.Walk(ctx, images.Handlers(collect, images.FilterPlatforms(images.ChildrenHandler(cs), platforms.OnlyStrict(amd64))), img.img.Target()); err != nil {
		return fmt.Errorf("pin %s: walk: %w", img.Ref, err)
	}
	res = append(res, leases.Resource{ID: identity.ChainID(diffIDs).String(), Type: "snapshots/" + r.opts.Snapshotter})
	for _, res := range res {
		if err := ls.AddResource(ctx, l, res); err != nil {
			return fmt.Errorf("pin %s: %s: %w", img.Ref, res.Type, err)
		}
	}
	md := img.img.Metadata()
	md.Labels = map[string]string{LabelPinned: "true"}
	if _, err := r.client.ImageService().Update(ctx, md, "labels."+LabelPinned); err != nil {
		return fmt.Errorf("pin %s: label: %w", img.Ref, err)
	}
	return nil
}

// Unpin releases what Pin(key) holds. The image record stays (and its
// label goes); the next image clean-up may then remove it.
func (r *Runtime) Unpin(ctx context.Context, key string, ref string) error {
	ctx = r.ctx(ctx)
	if err := r.client.LeasesService().Delete(ctx, leases.Lease{ID: pinLeasePrefix + key}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("unpin %s: %w", key, err)
	}
	if ref == "" {
		return nil
	}
	img, err := r.client.GetImage(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unpin %s: %w", ref, err)
	}
	if _, ok := img.Labels()[LabelPinned]; ok {
		md := img.Metadata()
		md.Labels = nil // an update of a label that is absent removes it
		if _, err := r.client.ImageService().Update(ctx, md, "labels."+LabelPinned); err != nil {
			return fmt.Errorf("unpin %s: label: %w", ref, err)
		}
	}
	return nil
}

// Pins lists the keys of the pins in place.
func (r *Runtime) Pins(ctx context.Context) ([]string, error) {
	ls, err := r.client.LeasesService().List(r.ctx(ctx))
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	var keys []string
	for _, l := range ls {
		if k, ok := strings.CutPrefix(l.ID, pinLeasePrefix); ok {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
