package runtime

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"
)

// LabelPool marks a pre-prepared root filesystem (provisioned instance)
// with its function's name.
const LabelPool = "jobgate.pool"

// PrepareRootfs prepares a writable root filesystem of img under key, ahead
// of the event that will use it (Spec.RootfsKey). It is a GC root until a
// container takes it.
func (r *Runtime) PrepareRootfs(ctx context.Context, img *Image, key, function string) error {
	ctx = r.ctx(ctx)
	diffIDs, err := img.img.RootFS(ctx)
	if err != nil {
		return fmt.Errorf("prepare rootfs %s: %w", key, err)
	}
	_, err = r.client.SnapshotService(r.opts.Snapshotter).Prepare(ctx, key, identity.ChainID(diffIDs).String(),
		snapshots.WithLabels(map[string]string{
			"containerd.io/gc.root": strconv.FormatInt(time.Now().Unix(), 10),
			LabelPool:               function,
		}))
	if err != nil {
		return fmt.Errorf("prepare rootfs %s: %w", key, err)
	}
	return nil
}

// RemoveRootfs removes a prepared root filesystem that no container took.
func (r *Runtime) RemoveRootfs(ctx context.Context, key string) error {
	err := r.client.SnapshotService(r.opts.Snapshotter).Remove(r.ctx(ctx), key)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove rootfs %s: %w", key, err)
	}
	return nil
}

// PreparedRootfs lists the keys of prepared root filesystems not yet
// taken, with their function.
func (r *Runtime) PreparedRootfs(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := r.client.SnapshotService(r.opts.Snapshotter).Walk(r.ctx(ctx), func(_ context.Context, info snapshots.Info) error {
		if fn, ok := info.Labels[LabelPool]; ok && info.Kind == snapshots.KindActive {
			out[info.Name] = fn
		}
		return nil
	}, fmt.Sprintf("labels.%q", LabelPool))
	if err != nil {
		return nil, fmt.Errorf("list prepared rootfs: %w", err)
	}
	return out, nil
}
