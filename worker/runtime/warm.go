package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/jobgate/jobgate/worker/stub"
)

// LabelPool marks a warm (provisioned) instance with its function's name.
const LabelPool = "jobgate.pool"

// LabelInstance is the instance id of a provisioned instance (its
// container id is the pool's).
const LabelInstance = "jobgate.instance"

const (
	stubPath     = stub.Path
	stubRunDir   = stub.RunDir
	startFIFO    = stub.StartFIFO
	instanceFile = stub.InstanceFile
)

// ErrNotWaiting means a warm instance's stub is no longer waiting for its
// environment (it exited, or it was already released).
var ErrNotWaiting = errors.New("warm instance is not waiting")

// CreateWarm creates and starts a provisioned ("warm") instance: the
// container is made from s as usual, but its process is jobgate's stub,
// which checks the command exists and then waits on a FIFO for the
// environment; Release hands it over and the stub execs the command with
// it. Everything slow (snapshot, spec, shim, runc, log driver) is done
// before the event exists. s.Env should hold everything but the event.
func (r *Runtime) CreateWarm(ctx context.Context, s Spec) (*Instance, error) {
	if r.opts.StubBinary == "" || r.opts.StubDir == "" {
		return nil, fmt.Errorf("warm %s: provisioned instances need the static stub (see worker/stub/stubbin)", s.ID)
	}
	dir := filepath.Join(r.opts.StubDir, s.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("warm %s: %w", s.ID, err)
	}
	fifo := filepath.Join(dir, startFIFO)
	_ = os.Remove(fifo)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return nil, fmt.Errorf("warm %s: mkfifo: %w", s.ID, err)
	}
	s.warm = &warmOpts{mounts: []specs.Mount{
		{Destination: stubPath, Source: r.opts.StubBinary, Type: "bind", Options: []string{"rbind", "ro"}},
		{Destination: stubRunDir, Source: dir, Type: "bind", Options: []string{"rbind", "ro"}},
	}}
	in, err := r.Create(ctx, s)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := in.Start(ctx); err != nil {
		_ = in.Remove(context.WithoutCancel(ctx))
		_ = os.RemoveAll(dir)
		return nil, err
	}
	in.warmDir = dir
	return in, nil
}

type warmOpts struct {
	mounts []specs.Mount
}

// withWarm makes the stub the process (it gets the real argv after
// StubArg) and mounts the stub and its run directory.
func withWarm(w *warmOpts) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		sp.Process.Args = append([]string{stubPath, stub.Arg}, sp.Process.Args...)
		sp.Mounts = append(sp.Mounts, w.mounts...)
		return nil
	}
}

// Release gives a warm instance its instance id (for the log driver) and
// environment; its stub then execs the command. It fails with
// ErrNotWaiting, leaving nothing changed, if the stub is not waiting.
func (in *Instance) Release(ctx context.Context, inst string, env []string) error {
	if in.warmDir == "" {
		return fmt.Errorf("release %s: %w", in.ID, ErrNotWaiting)
	}
	// Non-blocking open fails (ENXIO) unless the stub has the FIFO open.
	f, err := os.OpenFile(filepath.Join(in.warmDir, startFIFO), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("release %s: %w: %v", in.ID, ErrNotWaiting, err)
	}
	defer f.Close()
	if err := os.WriteFile(filepath.Join(in.warmDir, instanceFile), []byte(inst), 0o600); err != nil {
		return fmt.Errorf("release %s: %w", in.ID, err)
	}
	b, err := json.Marshal(env)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(dl)
	} else {
		_ = f.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("release %s: write environment: %w", in.ID, err)
	}
	return nil
}

// Waiting reports whether a warm instance's stub still waits for its
// environment (it was never released).
func (in *Instance) Waiting() bool {
	if in.warmDir == "" {
		return false
	}
	f, err := os.OpenFile(filepath.Join(in.warmDir, startFIFO), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	f.Close() // the stub reads EOF and exits: the caller removes the instance
	return true
}

// removeWarmDir deletes a warm instance's run directory.
func (r *Runtime) removeWarmDir(id string) {
	if r.opts.StubDir != "" {
		_ = os.RemoveAll(filepath.Join(r.opts.StubDir, id))
	}
}

// FindInstance returns the container id of the provisioned instance that
// was given instance id inst, or "" if there is none.
func (r *Runtime) FindInstance(ctx context.Context, inst string) (string, error) {
	cs, err := r.client.Containers(r.ctx(ctx), fmt.Sprintf("labels.%q==%q", LabelInstance, inst))
	if err != nil {
		return "", fmt.Errorf("find instance %s: %w", inst, err)
	}
	if len(cs) == 0 {
		return "", nil
	}
	return cs[0].ID(), nil
}

// Warm lists the pooled (warm, never released) containers: id → function.
func (r *Runtime) Warm(ctx context.Context) (map[string]string, error) {
	ctx = r.ctx(ctx)
	cs, err := r.client.Containers(ctx, fmt.Sprintf("labels.%q", LabelPool))
	if err != nil {
		return nil, fmt.Errorf("list warm instances: %w", err)
	}
	out := map[string]string{}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil || labels[LabelInstance] != "" {
			continue
		}
		out[c.ID()] = labels[LabelPool]
	}
	return out, nil
}

// SetLabels updates several labels of the container at once.
func (in *Instance) SetLabels(ctx context.Context, labels map[string]string) error {
	if _, err := in.ctr.SetLabels(ctx, labels); err != nil {
		return fmt.Errorf("labels %s: %w", in.ID, err)
	}
	for k, v := range labels {
		in.Labels[k] = v
	}
	return nil
}
