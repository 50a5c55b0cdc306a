// Package runtime is jobgate's only door to containerd: it pulls images
// under jobgate's image policy and creates, starts, watches and deletes job
// instances. Everything else in jobgate talks to containerd through it.
package runtime

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/jonboulle/clockwork"
	"golang.org/x/sync/singleflight"
)

// Labels set on every jobgate container.
const (
	LabelRequestID = "jobgate.request-id"
	LabelFunction  = "jobgate.function"
	LabelAttempt   = "jobgate.attempt"
	LabelDeadline  = "jobgate.deadline" // RFC 3339; the timeout survives a worker restart
	LabelNode      = "jobgate.node"
	// LabelOutcome holds the instance's final status (JSON), written
	// before its task is deleted, so a worker that dies in between can
	// still record it.
	LabelOutcome = "jobgate.outcome"
	// LabelNetwork names the instance's network namespace (network:
	// bridge), released with the instance.
	LabelNetwork = "jobgate.network"
)

// Network gives bridge-mode instances their network namespace
// (worker/jobnet).
type Network interface {
	// Attach gives an instance of function a namespace; recyclable says
	// the instance cannot change it (it may serve another once empty).
	Attach(ctx context.Context, function string, recyclable bool) (NetNS, error)
	Detach(ctx context.Context, id string) error
}

// NetNS is one instance's network: the namespace to join and the files
// mounted as its /etc/resolv.conf and /etc/hosts.
type NetNS struct {
	ID, Path, ResolvConf, Hosts string
}

// Registry is how to reach one registry host.
type Registry struct {
	Insecure bool   // plain HTTP
	Username string // with Password: basic auth; else the docker config is consulted
	Password string
}

// Options configure a Runtime.
type Options struct {
	Address     string
	Namespace   string
	Snapshotter string
	Registries  map[string]Registry
	// DockerConfig is a docker config.json consulted for registries
	// without username/password_env.
	DockerConfig string
	// MaxImageBytes refuses images whose compressed size is at least this.
	MaxImageBytes int64
	// LoggerBinary and LoggerArgs are run by containerd's shim to capture
	// a job's stdout and stderr (cio.BinaryIO), so logs outlive the worker.
	LoggerBinary string
	LoggerArgs   map[string]string
	// TagRecheck is how long a tag's registry digest is trusted once
	// checked (0: every EnsureImage asks the registry).
	TagRecheck time.Duration
	// Clock times the TagRecheck window (nil: the real clock).
	Clock clockwork.Clock
	// ShimGroup, when set, is the runc shim group an instance joins when
	// no other is being created in it, kept warm by an anchor container
	// of that name (see EnsureAnchor).
	ShimGroup string
	// StubBinary (static: it runs inside job containers) and StubDir (a
	// run directory per warm instance) enable CreateWarm.
	StubBinary string
	StubDir    string
	// Network attaches bridge-mode instances (nil: bridge is refused).
	Network Network
}

// Runtime wraps one containerd client in one namespace.
type Runtime struct {
	client *containerd.Client
	opts   Options
	pulls  singleflight.Group
	// groupBusy is held while a task is created in the shim group.
	groupBusy atomic.Bool
	// checked maps a tag reference to the digest the registry gave and
	// when (TagRecheck).
	checked sync.Map
	// envCache maps image digest → config env; image configs are immutable.
	envCache sync.Map
}

// New connects to containerd.
func New(ctx context.Context, o Options) (*Runtime, error) {
	if o.Snapshotter == "" {
		o.Snapshotter = "overlayfs"
	}
	if o.MaxImageBytes == 0 {
		o.MaxImageBytes = 1 << 30
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	c, err := containerd.New(o.Address, containerd.WithDefaultNamespace(o.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect containerd %s: %w", o.Address, err)
	}
	return &Runtime{client: c, opts: o}, nil
}

// Close closes the client connection (running jobs are unaffected).
func (r *Runtime) Close() error { return r.client.Close() }

func (r *Runtime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.opts.Namespace)
}

// Ping checks that containerd answers.
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.client.Version(r.ctx(ctx)); err != nil {
		return fmt.Errorf("containerd %s: %w", r.opts.Address, err)
	}
	return nil
}
