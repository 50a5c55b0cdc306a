package testenv

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
)

// Containerd is a direct containerd client for what tests check behind
// the runtime's back: images, snapshots, tasks. (Production code reaches
// containerd only through worker/runtime.)
type Containerd struct {
	c  *containerd.Client
	ns string
}

// OpenContainerd connects to address in namespace ns; closed at cleanup.
func OpenContainerd(t testing.TB, address, ns string) *Containerd {
	t.Helper()
	c, err := containerd.New(address)
	if err != nil {
		t.Fatalf("containerd %s: %v", address, err)
	}
	t.Cleanup(func() { c.Close() })
	return &Containerd{c: c, ns: ns}
}

func (c *Containerd) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, c.ns)
}

// ImageLabels returns the labels of the local image ref; found is false
// when it is not there.
func (c *Containerd) ImageLabels(ctx context.Context, ref string) (labels map[string]string, found bool, err error) {
	img, err := c.c.GetImage(c.ctx(ctx), ref)
	if errdefs.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return img.Labels(), true, nil
}

// RemoveImage deletes the local image ref and waits for the garbage
// collector, so its content and snapshots are gone unless held.
func (c *Containerd) RemoveImage(ctx context.Context, ref string) error {
	err := c.c.ImageService().Delete(c.ctx(ctx), ref, images.SynchronousDelete())
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// SnapshotExists reports whether the snapshot key is still there.
func (c *Containerd) SnapshotExists(ctx context.Context, key string) (bool, error) {
	_, err := c.c.SnapshotService(containerd.DefaultSnapshotter).Stat(c.ctx(ctx), key)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// TaskPid is the host pid of container id's task.
func (c *Containerd) TaskPid(ctx context.Context, id string) (uint32, error) {
	ctr, err := c.c.LoadContainer(c.ctx(ctx), id)
	if err != nil {
		return 0, err
	}
	task, err := ctr.Task(c.ctx(ctx), nil)
	if err != nil {
		return 0, err
	}
	return task.Pid(), nil
}

// RunningTasks counts the namespace's tasks whose process is running.
func (c *Containerd) RunningTasks(ctx context.Context) (int, error) {
	ctx = c.ctx(ctx)
	ctrs, err := c.c.Containers(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ctr := range ctrs {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			continue
		}
		if st, err := task.Status(ctx); err == nil && st.Status == containerd.Running {
			n++
		}
	}
	return n, nil
}

// Purge kills every task of the namespace and deletes every container
// with its snapshot, so no job, stub or log driver outlives the tests.
func (c *Containerd) Purge(ctx context.Context) error {
	ctx = c.ctx(ctx)
	ctrs, err := c.c.Containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
