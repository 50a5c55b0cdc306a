package runtime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/jobgate/jobgate/internal/jobenv"
)

// ErrNoTask means the container exists but was never started (or its
// task is gone).
var ErrNoTask = errors.New("container has no task")

// ErrInit means the container's process could not be started for a
// reason of the function's (bad command, missing binary, unusable
// working directory): SCF's 445, not retried.
var ErrInit = errors.New("container init failed")

// ErrRuntimeFailed means the shim, runc or containerd failed before the
// function's process ran (a shim that would not start, a socket gone):
// the platform's fault, retried, never charged to the job.
var ErrRuntimeFailed = errors.New("container runtime failed before the process ran")

// initError classifies a NewTask or Start failure. runc reports what is
// the function's fault as "unable to start container process: …" (exec
// not found, not executable, bad cwd); anything else came from the shim,
// runc or containerd.
func initError(what, id string, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "unable to start container process") || strings.Contains(msg, "executable file not found") ||
		strings.Contains(msg, "exec format error") {
		return fmt.Errorf("%s %s: %w: %v", what, id, ErrInit, err)
	}
	return fmt.Errorf("%s %s: %w: %v", what, id, ErrRuntimeFailed, err)
}

// Spec describes one job instance.
type Spec struct {
	ID        string
	Image     *Image
	Command   []string // overrides the image ENTRYPOINT
	Args      []string // overrides the image CMD
	Env       []string // the complete environment (see jobenv.Build)
	MemoryMB  int
	PidsLimit int64
	// Network is the function's mode: "bridge" (a namespace from
	// Options.Network), "host", or "none" (loopback only).
	Network   string
	Isolation Isolation
	// EventFile, if set, is a host file mounted read-only at
	// jobenv.EventFilePath (an event too large for the environment).
	EventFile string
	warm      *warmOpts // set by CreateWarm
	ownShim   bool      // never join the warm shim group (a retry after the group failed)
	Labels    map[string]string
}

// Isolation is what a job may use and do beyond memory and pids.
type Isolation struct {
	CPU            float64 // cores (CFS quota); 0: no quota
	User           *User   // nil: the image's USER
	ReadonlyRootfs bool    // with a writable /tmp tmpfs of TmpfsMB
	TmpfsMB        int
	CapAdd         []string // added back to the default set (without CAP_NET_RAW)
	// Restricted is Kubernetes' "restricted" Pod Security level: no
	// capability at all, a non-root user (the image's if it is not root,
	// else 65534), a read-only rootfs (ReadonlyRootfs is implied).
	Restricted bool
}

// nobody is the uid/gid a restricted job runs as when its image says root.
const nobody = 65534

// restricted drops every capability and replaces a root user; it goes
// after WithImageConfig and WithUIDGID (which set the user).
func restricted(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
	if sp.Process == nil {
		return nil
	}
	sp.Process.Capabilities = &specs.LinuxCapabilities{}
	if sp.Process.User.UID == 0 {
		sp.Process.User.UID, sp.Process.User.GID = nobody, nobody
		sp.Process.User.AdditionalGids = nil
	}
	return nil
}

// User is a numeric uid:gid.
type User struct{ UID, GID uint32 }

// cpuShares is a job's CPU weight without a cpu setting: half the
// kernel's default (1024), so the host's own services (Redis, the
// gateway, the worker) win under contention.
const cpuShares = 512

// cfsPeriod is the CFS period the cpu quota is a share of.
const cfsPeriod = 100_000 // µs

// isolationOpts turns Isolation into spec options. They go after
// WithImageConfig (it sets the image's user) and before the seccomp
// profile (it depends on the final capabilities).
func isolationOpts(iso Isolation) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithCPUShares(cpuShares)}
	if iso.CPU > 0 {
		opts = append(opts, oci.WithCPUCFS(int64(iso.CPU*cfsPeriod), cfsPeriod))
	}
	if iso.User != nil {
		opts = append(opts, oci.WithUIDGID(iso.User.UID, iso.User.GID))
	}
	if iso.ReadonlyRootfs || iso.Restricted {
		opts = append(opts, oci.WithRootFSReadonly(), oci.WithMounts([]specs.Mount{{
			Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			// The kernel enforces the size: no polling gap.
			Options: []string{"nosuid", "nodev", "mode=1777", fmt.Sprintf("size=%dm", max(iso.TmpfsMB, 1))},
		}}))
	}
	drop := []string{"CAP_NET_RAW"}
	for _, c := range iso.CapAdd {
		if c == "CAP_NET_RAW" {
			drop = nil
		}
	}
	if len(drop) > 0 {
		opts = append(opts, oci.WithDroppedCapabilities(drop))
	}
	if len(iso.CapAdd) > 0 {
		opts = append(opts, oci.WithAddedCapabilities(iso.CapAdd))
	}
	if iso.Restricted {
		opts = append(opts, restricted)
	}
	return opts
}

// Instance is a created container and its task.
type Instance struct {
	ID      string
	Labels  map[string]string
	ctr     containerd.Container
	task    containerd.Task
	warmDir string // a warm instance's run directory (CreateWarm)
	rt      *Runtime
}

// ExitStatus is how an instance's process ended.
type ExitStatus struct {
	Code     uint32
	ExitedAt time.Time
	Err      error // the wait itself failed; the process may still run
}

// stackLimit lets a full 2 MiB environment through execve (args+env must
// fit in a quarter of RLIMIT_STACK; the usual 8 MiB allows only 2 MiB
// including pointers and the image's own env).
const stackLimit = 16 << 20

// ProcessArgs applies SCF's Command/Args override with Kubernetes
// semantics: Command replaces ENTRYPOINT (and drops the image CMD), Args
// replaces CMD.
func ProcessArgs(entrypoint, cmd, command, args []string) []string {
	switch {
	case len(command) > 0 && len(args) > 0:
		return append(append([]string{}, command...), args...)
	case len(command) > 0:
		return append([]string{}, command...)
	case len(args) > 0:
		return append(append([]string{}, entrypoint...), args...)
	}
	return append(append([]string{}, entrypoint...), cmd...)
}

// nativeSyscallsOnly limits the seccomp filter to the x86_64 syscall ABI
// (jobgate runs linux/amd64 images only). The 32-bit and x32 ABIs are then
// refused outright, a smaller attack surface, and runc compiles a third of
// the filter: measured ~15 ms off every task create (bench/diag).
func nativeSyscallsOnly(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
	if sp.Linux != nil && sp.Linux.Seccomp != nil {
		sp.Linux.Seccomp.Architectures = []specs.Arch{specs.ArchX86_64}
	}
	return nil
}

// Create makes the container and its (not yet started) task. On error
// nothing is left behind.
func (r *Runtime) Create(ctx context.Context, s Spec) (_ *Instance, err error) {
	ctx = r.ctx(ctx)
	imgSpec, err := s.Image.img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("create %s: image spec: %w", s.ID, err)
	}
	argv := ProcessArgs(imgSpec.Config.Entrypoint, imgSpec.Config.Cmd, s.Command, s.Args)
	if len(argv) == 0 {
		return nil, fmt.Errorf("create %s: %w: no command (the image has no ENTRYPOINT/CMD and the function sets none)", s.ID, ErrInit)
	}
	env := s.Env
	opts := []oci.SpecOpts{
		oci.WithImageConfig(s.Image.img),
		oci.WithProcessArgs(argv...),
		func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
			sp.Process.Env = env
			sp.Process.Rlimits = append(sp.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_STACK", Soft: stackLimit, Hard: stackLimit})
			return nil
		},
		oci.WithHostname("jobgate"),
		oci.WithNoNewPrivileges,
		// Its own cgroup namespace (Docker's default on cgroup v2; runc
		// does it on v1 too): the job sees its cgroup as "/", not the
		// host's layout.
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}),
	}
	if s.MemoryMB > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(s.MemoryMB)<<20))
	}
	if s.PidsLimit > 0 {
		opts = append(opts, oci.WithPidsLimit(s.PidsLimit))
	}
	var netID string
	switch s.Network {
	case "host":
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostResolvconf, oci.WithHostHostsFile)
	case "bridge":
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		if r.opts.Network == nil {
			return nil, fmt.Errorf("create %s: %w: network: bridge is not available on this worker", s.ID, ErrRuntimeFailed)
		}
		ns, aerr := r.opts.Network.Attach(ctx, s.Labels[LabelFunction], len(s.Isolation.CapAdd) == 0)
		if aerr != nil {
			return nil, fmt.Errorf("create %s: %w", s.ID, aerr)
		}
		netID = ns.ID
		defer func() {
			if err != nil {
				_ = r.opts.Network.Detach(context.WithoutCancel(ctx), netID)
			}
		}()
		s.Labels[LabelNetwork] = netID
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ns.Path}),
			oci.WithMounts([]specs.Mount{
				{Destination: "/etc/resolv.conf", Type: "bind", Source: ns.ResolvConf, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
				{Destination: "/etc/hosts", Type: "bind", Source: ns.Hosts, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
			}))
	}
	// One start at a time joins the warm shim; the others start their
	// own, since the shim serializes task creation (see EnsureAnchor).
	grouped := false
	if r.opts.ShimGroup != "" && !s.ownShim && r.groupBusy.CompareAndSwap(false, true) {
		grouped = true
		defer r.groupBusy.Store(false)
		opts = append(opts, oci.WithAnnotations(map[string]string{groupAnnotation: r.opts.ShimGroup}))
	}
	if s.warm != nil {
		opts = append(opts, withWarm(s.warm))
	}
	if s.EventFile != "" {
		opts = append(opts, oci.WithMounts([]specs.Mount{{
			Destination: jobenv.EventFilePath, Type: "bind", Source: s.EventFile,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		}}))
	}
	opts = append(opts, isolationOpts(s.Isolation)...)
	// Last: the default profile depends on the final capability set.
	opts = append(opts, seccomp.WithDefaultProfile(), nativeSyscallsOnly)

	newContainer := func() (containerd.Container, error) {
		return r.client.NewContainer(ctx, s.ID,
			containerd.WithImage(s.Image.img),
			containerd.WithSnapshotter(r.opts.Snapshotter),
			containerd.WithNewSnapshot(s.ID, s.Image.img),
			containerd.WithNewSpec(opts...),
			containerd.WithContainerLabels(s.Labels),
		)
	}
	ctr, err := newContainer()
	if err != nil && errdefs.IsAlreadyExists(err) {
		// A worker killed mid-create can leave the snapshot without its
		// container: remove the orphan and try once more.
		if _, lerr := r.client.LoadContainer(ctx, s.ID); errdefs.IsNotFound(lerr) {
			if rerr := r.client.SnapshotService(r.opts.Snapshotter).Remove(ctx, s.ID); rerr == nil || errdefs.IsNotFound(rerr) {
				ctr, err = newContainer()
			}
		}
	}
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %s: %w", s.ID, err)
		}
		// The image may have gone since it was checked: check it anew.
		r.checked.Delete(s.Image.Ref)
		// A failed create may still have made the snapshot.
		_ = r.client.SnapshotService(r.opts.Snapshotter).Remove(context.WithoutCancel(ctx), s.ID)
		return nil, fmt.Errorf("create container %s: %w", s.ID, err)
	}
	defer func() {
		if err != nil {
			_ = ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
		}
	}()
	task, err := ctr.NewTask(ctx, cio.BinaryIO(r.opts.LoggerBinary, r.opts.LoggerArgs))
	if err != nil {
		// A create cut short by a crash can leave its bundle: clear it
		// and try once more (containerd itself would only at its restart).
		if dir, stale := staleBundle(err, r.opts.Namespace, s.ID); stale && clearStaleBundle(dir, r.opts.Namespace, s.ID) == nil {
			task, err = ctr.NewTask(ctx, cio.BinaryIO(r.opts.LoggerBinary, r.opts.LoggerArgs))
		}
	}
	if err != nil {
		err = initError("create task", s.ID, err)
		if grouped && errors.Is(err, ErrRuntimeFailed) {
			// The warm shim is gone or going (its socket vanished under
			// us): this start gets a shim of its own, and the anchor is
			// made anew by the next EnsureAnchor.
			_ = ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
			if netID != "" {
				// The retry attaches a namespace of its own.
				_ = r.opts.Network.Detach(context.WithoutCancel(ctx), netID)
				delete(s.Labels, LabelNetwork)
				netID = ""
			}
			own := s
			own.ownShim = true
			in, rerr := r.Create(ctx, own)
			if rerr == nil {
				return in, nil
			}
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	return &Instance{ID: s.ID, Labels: s.Labels, ctr: ctr, task: task, rt: r}, nil
}

// Wait subscribes to the task's exit. Call it before Start; ctx should
// live as long as the instance is supervised.
func (in *Instance) Wait(ctx context.Context) (<-chan ExitStatus, error) {
	ch, err := in.task.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait %s: %w", in.ID, err)
	}
	out := make(chan ExitStatus, 1)
	go func() {
		st := <-ch
		code, at, err := st.Result()
		out <- ExitStatus{Code: code, ExitedAt: at, Err: err}
	}()
	return out, nil
}

// Start starts the process.
func (in *Instance) Start(ctx context.Context) error {
	if err := in.task.Start(ctx); err != nil {
		return initError("start", in.ID, err)
	}
	return nil
}

// SetLabel updates one label of the container.
func (in *Instance) SetLabel(ctx context.Context, k, v string) error {
	if _, err := in.ctr.SetLabels(ctx, map[string]string{k: v}); err != nil {
		return fmt.Errorf("label %s: %w", in.ID, err)
	}
	in.Labels[k] = v
	return nil
}

// Started reports whether the task's process was ever started (a worker
// killed between NewTask and Start leaves it "created").
func (in *Instance) Started(ctx context.Context) (bool, error) {
	st, err := in.task.Status(ctx)
	if err != nil {
		return false, fmt.Errorf("status %s: %w", in.ID, err)
	}
	return st.Status != containerd.Created, nil
}

// Signal sends sig to the process, or to every process of the instance.
func (in *Instance) Signal(ctx context.Context, sig syscall.Signal, all bool) error {
	var opts []containerd.KillOpts
	if all {
		opts = append(opts, containerd.WithKillAll)
	}
	if err := in.task.Kill(ctx, sig, opts...); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("signal %s %v: %w", in.ID, sig, err)
	}
	return nil
}

// Usage is what the cgroup says about an instance.
type Usage struct {
	PeakMemoryBytes int64  // 0 when the kernel does not report a peak
	OOMKills        uint64 // processes killed by the OOM killer
}

// Usage reads the instance's cgroup; call it after the exit and before
// DeleteTask (which removes the cgroup).
func (in *Instance) Usage(ctx context.Context) (Usage, error) {
	m, err := in.task.Metrics(ctx)
	if err != nil {
		return Usage{}, fmt.Errorf("metrics %s: %w", in.ID, err)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return Usage{}, fmt.Errorf("metrics %s: %w", in.ID, err)
	}
	var u Usage
	switch s := v.(type) {
	case *cgroupsv1.Metrics:
		if s.Memory != nil && s.Memory.Usage != nil {
			u.PeakMemoryBytes = int64(s.Memory.Usage.Max)
		}
		if s.MemoryOomControl != nil {
			u.OOMKills = s.MemoryOomControl.OomKill
		}
	case *cgroupsv2.Metrics:
		if s.Memory != nil {
			u.PeakMemoryBytes = int64(s.Memory.Usage) // cgroup v2 stats carry no peak here
		}
		if s.MemoryEvents != nil {
			u.OOMKills = s.MemoryEvents.OomKill
		}
	}
	return u, nil
}

// DeleteTask removes the exited task. The shim then closes the log pipes
// and waits for the log driver to flush, so the log is complete after it.
func (in *Instance) DeleteTask(ctx context.Context) error {
	if in.task == nil {
		return nil
	}
	if _, err := in.task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task %s: %w", in.ID, err)
	}
	return nil
}

// Remove deletes the task (killing it if it still runs), the container
// and its snapshot.
func (in *Instance) Remove(ctx context.Context) error {
	var errs []error
	if in.task != nil {
		if _, err := in.task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete task %s: %w", in.ID, err))
		}
	}
	if err := in.ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete container %s: %w", in.ID, err))
	}
	if in.rt != nil {
		in.rt.removeWarmDir(in.ID)
		// After the task: the namespace is the job's until its process
		// is gone.
		if id := in.Labels[LabelNetwork]; id != "" && in.rt.opts.Network != nil && len(errs) == 0 {
			if err := in.rt.opts.Network.Detach(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("release network of %s: %w", in.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Load finds an existing instance (after a worker restart). It returns
// ErrNoTask (with the instance, so it can be deleted) when the container
// was never started.
func (r *Runtime) Load(ctx context.Context, id string) (*Instance, error) {
	ctx = r.ctx(ctx)
	ctr, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", id, err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return nil, fmt.Errorf("labels %s: %w", id, err)
	}
	in := &Instance{ID: id, Labels: labels, ctr: ctr, rt: r}
	if _, pooled := labels[LabelPool]; pooled && r.opts.StubDir != "" {
		in.warmDir = filepath.Join(r.opts.StubDir, id)
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return in, fmt.Errorf("load %s: %w", id, ErrNoTask)
	}
	if err != nil {
		return nil, fmt.Errorf("load task %s: %w", id, err)
	}
	in.task = task
	return in, nil
}

// IsNotFound reports whether err means the container does not exist.
func IsNotFound(err error) bool { return errdefs.IsNotFound(err) }

// List returns the ids of jobgate's containers in the namespace.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	ctx = r.ctx(ctx)
	cs, err := r.client.Containers(ctx, fmt.Sprintf("labels.%q", LabelRequestID))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID()
	}
	return ids, nil
}

// WritableBytes is the size of an instance's writable layer (a walk of
// its upper directory: O(files)).
func (r *Runtime) WritableBytes(ctx context.Context, id string) (int64, error) {
	ctx = r.ctx(ctx)
	key := id
	if ctr, err := r.client.LoadContainer(ctx, id); err == nil {
		if info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata); err == nil && info.SnapshotKey != "" {
			key = info.SnapshotKey
		}
	}
	u, err := r.client.SnapshotService(r.opts.Snapshotter).Usage(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("snapshot usage %s: %w", id, err)
	}
	return u.Size, nil
}

// NetworksInUse lists the network namespaces this namespace's containers
// name (LabelNetwork).
func (r *Runtime) NetworksInUse(ctx context.Context) (map[string]bool, error) {
	ctx = r.ctx(ctx)
	cs, err := r.client.Containers(ctx, fmt.Sprintf("labels.%q", LabelNetwork))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := map[string]bool{}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil {
			return nil, fmt.Errorf("labels %s: %w", c.ID(), err)
		}
		out[labels[LabelNetwork]] = true
	}
	return out, nil
}
