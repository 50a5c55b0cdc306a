// Package worker runs invocations: it takes tasks from asynq, starts each
// one as a container (acknowledging once it has started), and supervises
// it to a final status.
//
// A newcomer's path through it: handler.go (ProcessTask → an attempt),
// attempt.go (the attempt runner: claim → admit → image → container →
// start → RUNNING → ack, then supervise → outcome → retry or dead letter
// → cleanup), policy.go (every failure decision), reconcile.go (re-attach
// after a restart). The parts an attempt uses have their own types and
// locks: admission.go (capacity and concurrency), claim.go, pool.go
// (provisioned instances), accel.go (image acceleration), control.go
// (terminate requests, OOM events).
package worker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/control"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/metrics"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/startstop"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/worker/jobnet"
	"github.com/jobgate/jobgate/worker/logdriver"
	"github.com/jobgate/jobgate/worker/runtime"
	"github.com/jobgate/jobgate/worker/stub/stubbin"
)

// pidsLimit bounds the processes of one instance (fork bombs).
const pidsLimit = 1024

// Worker is the worker role on one host.
type Worker struct {
	// degraded says which features this installation lacks (Degradations).
	degraded []string
	// conf is swapped whole by Reload; read it through config().
	conf atomic.Pointer[config.Config]
	rdb  redis.UniversalClient
	rt   *runtime.Runtime
	// net is the bridge network (nil: no function uses network: bridge).
	net     *jobnet.Manager
	records *record.Store
	logs    *logstore.Store
	dlq     *deadletter.Store
	// destinationDLQ holds deliveries of final statuses that ran out of
	// retries (its own list, beside the invocations' dead letters).
	destinationDLQ    *deadletter.Store
	destinationClient *http.Client
	targets           *targetConns
	submit            *submit.Submitter
	control           *control.Requests
	keys              keyspace.Keys
	metrics           *metrics.Metrics
	log               zerolog.Logger
	now               func() time.Time

	// What attempts use; each part has its own lock.
	admitter slots
	claims   *claims
	pool     warmSource
	runners  *runners
	ends     *recentEnds // ends recorded lately (ends.go)
	inflight *inflight   // task deliveries being handled
	ooms     *oomTracker
	// Lifecycle.
	pools *warmPool
	// demand is each function's recent concurrency (adaptive warm pools).
	demand *demand
	accel  imagePinner
	srv    *asynq.Server
	// spoolMu keeps two replays of the log spool (the periodic one and an
	// ending attempt's) from appending the same lines twice.
	spoolMu sync.Mutex
	// group outlives every handler call: supervisors run on it.
	group *startstop.Group
}

// The worker's parts, as the worker and its attempts use them.
type (
	// slots admits attempts within the node's capacity and the
	// function's concurrency (admission.go).
	slots interface {
		admit(ctx context.Context, fn *config.Function, instance string) (*admission, error)
		readmit(ctx context.Context, fn *config.Function, instance string) *admission
	}
	// warmSource hands out provisioned instances (pool.go).
	warmSource interface {
		take(function, digest string) *warm
		discard(*warm)
	}
	// imagePinner keeps accelerated functions' images pulled and pinned
	// (accel.go).
	imagePinner interface {
		accelerate(life context.Context, cfg *config.Config)
		stop()
		states() map[string]AccelState
	}
)

var (
	_ slots       = (*admitter)(nil)
	_ warmSource  = (*warmPool)(nil)
	_ imagePinner = (*accelerator)(nil)
)

// Deps are a worker's collaborators.
type Deps struct {
	Config      *config.Config
	Redis       redis.UniversalClient
	Records     *record.Store
	Logs        *logstore.Store
	DeadLetters *deadletter.Store
	// DestinationDeadLetters keeps the deliveries that ran out of retries.
	DestinationDeadLetters *deadletter.Store
	Submitter              *submit.Submitter
	Metrics                *metrics.Metrics // optional
	Logger                 zerolog.Logger
	// Clock times the tag recheck window (nil: the real clock).
	Clock clockwork.Clock
}

// New connects to containerd and prepares the log driver settings.
func New(ctx context.Context, d Deps, logSettings logdriver.Settings) (*Worker, error) {
	cfg := d.Config
	if err := os.MkdirAll(cfg.Worker.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("worker state dir: %w", err)
	}
	bin, err := loggerBinary(cfg.Worker.LoggerBinary)
	if err != nil {
		return nil, err
	}
	// Provisioned instances start with the static stub jobgate carries;
	// without it they are unavailable (events start cold).
	runDirs := filepath.Join(cfg.Worker.StateDir, "run")
	var degraded []string
	stubBin, err := stubbin.Install(cfg.Worker.StateDir)
	if err != nil {
		stubBin = ""
		degraded = append(degraded, fmt.Sprintf("provisioned instances are unavailable (events start cold): %v", err))
	}
	logSettings.RunDirs = runDirs
	settings := filepath.Join(cfg.Worker.StateDir, "logger.json")
	if err := logdriver.WriteSettings(settings, logSettings); err != nil {
		return nil, err
	}
	jn, err := newNetwork(ctx, cfg, d)
	if err != nil {
		return nil, err
	}
	var rtNet runtime.Network
	if jn != nil {
		rtNet = bridgeNetwork{jn}
	}
	shimGroup := ""
	if *cfg.Worker.ShimGroup {
		shimGroup = "jobgate-shim-" + containerSafe(cfg.Worker.Node)
	}
	rt, err := runtime.New(ctx, runtime.Options{
		Address: cfg.Containerd.Address, Namespace: cfg.Containerd.Namespace, Snapshotter: cfg.Containerd.Snapshotter,
		Registries: RuntimeRegistries(cfg), DockerConfig: cfg.Worker.DockerConfig, MaxImageBytes: int64(cfg.Worker.MaxImageMB) << 20,
		LoggerBinary: bin, LoggerArgs: logdriver.Args(settings),
		ShimGroup: shimGroup, StubBinary: stubBin, StubDir: runDirs, Network: rtNet,
		TagRecheck: time.Duration(*cfg.Worker.TagRecheckMs) * time.Millisecond, Clock: d.Clock,
	})
	if err != nil {
		return nil, err
	}
	w := &Worker{
		net: jn,
		rdb: d.Redis, rt: rt, records: d.Records, logs: d.Logs, dlq: d.DeadLetters, submit: d.Submitter, metrics: d.Metrics,
		control: control.New(d.Redis, cfg.Redis.KeyPrefix(), cfg.Retention()),
		keys:    keyspace.New(cfg.Redis.KeyPrefix()),
		log:     d.Logger.With().Str("component", "worker").Str("node", cfg.Worker.Node).Logger(),
		now:     time.Now,
		claims:  &claims{rdb: d.Redis, keys: keyspace.New(cfg.Redis.KeyPrefix()), node: cfg.Worker.Node, retention: cfg.Retention()},
		runners: &runners{m: map[string]*attempt{}}, ends: &recentEnds{m: map[string]recentEnd{}}, inflight: &inflight{m: map[string]int{}},
		ooms:           &oomTracker{m: map[string]bool{}},
		destinationDLQ: d.DestinationDeadLetters, destinationClient: newDestinationClient(cfg.Worker.DestinationAllow()),
		targets: newTargetConns(),
	}
	w.conf.Store(cfg)
	w.degraded = degraded
	for _, d := range w.degraded {
		w.log.Error().Str("degraded", d).Msg("jobgate is installed incompletely")
	}
	for _, n := range InstallNotes(bin) {
		w.log.Warn().Str("note", n).Msg("jobgate works as installed, at a cost")
	}
	w.admitter = &admitter{rdb: d.Redis, keys: keyspace.New(cfg.Redis.KeyPrefix()), now: w.now,
		capacity: func() int { return w.config().Worker.CapacityMB }}
	w.demand = newDemand(time.Duration(cfg.Worker.Warm.IdleS) * time.Second)
	w.pools = newWarmPool(rt, w.config, w.log, w.demand, w.now)
	w.pool = w.pools
	w.accel = &accelerator{rt: rt, config: w.config, log: w.log, now: w.now}
	return w, nil
}

// Reload applies a changed configuration: functions (image, command, env,
// limits, acceleration) take effect for the next events; acceleration
// pins follow at once. Connection settings (Redis, containerd, node) need
// a restart and are kept.
func (w *Worker) Reload(ctx context.Context, cfg *config.Config) {
	next := *cfg
	cur := w.config()
	next.Redis, next.Containerd, next.Worker = cur.Redis, cur.Containerd, cur.Worker
	w.conf.Store(&next)
	w.log.Info().Int("functions", len(next.Functions)).Msg("configuration reloaded")
	if w.net != nil {
		if err := w.net.SetPolicy(ctx, jobnet.PolicyOf(&next)); err != nil {
			w.log.Error().Err(err).Msg("egress policy not reloaded (the running one stays)")
		}
	} else if next.UsesBridge() {
		w.log.Error().Msg("a function now uses network: bridge, which this worker did not set up at start: restart it")
	}
	w.accel.accelerate(w.group.Context(), &next)
	w.pools.resize(&next)
}

// config is the worker's current configuration.
func (w *Worker) config() *config.Config { return w.conf.Load() }

// Degraded lists what this worker cannot do as installed (for /readyz).
func (w *Worker) Degraded() []string { return w.degraded }

// InstallNotes says what an installation whose log driver is bin costs
// beyond the best one: with the full jobgate as every job's driver each
// running job takes ~30 MB more. nil: nothing. No feature depends on the
// driver (provisioned instances' stub is embedded: worker/stub/stubbin).
func InstallNotes(bin string) []string {
	var out []string
	if filepath.Base(bin) != "jobgate-logger" {
		out = append(out, fmt.Sprintf("every running job's log driver is the full jobgate binary (%s; ~30 MB more per job than jobgate-logger next to it)", bin))
	}
	return out
}

// LoggerBinary is the log driver a worker with this config uses.
func LoggerBinary(cfg *config.Config) (string, error) { return loggerBinary(cfg.Worker.LoggerBinary) }

// loggerBinary picks the log driver: the configured one, else
// jobgate-logger next to this executable (small: one runs per instance),
// else this executable itself (which accepts the same arguments).
func loggerBinary(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate jobgate binary for the log driver: %w", err)
	}
	if small := filepath.Join(filepath.Dir(exe), "jobgate-logger"); isExecutable(small) {
		return small, nil
	}
	return exe, nil
}

// containerSafe maps s to containerd's id alphabet.
func containerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Runtime exposes the containerd runtime (readiness checks, tests).
func (w *Worker) Runtime() *runtime.Runtime { return w.rt }

// Start re-attaches to instances left running, then starts taking tasks.
func (w *Worker) Start(ctx context.Context) error {
	w.group = startstop.Start(ctx)
	if err := w.rt.Ping(ctx); err != nil {
		return err
	}
	w.group.Go(func(ctx context.Context) { w.ooms.watch(ctx, w.rt) })
	lease := &nodeLease{rdb: w.rdb, keys: w.keys, node: w.config().Worker.Node, now: w.now, fence: w.fence,
		ttl: time.Duration(w.config().Worker.LeaseS) * time.Second, log: w.log.With().Str("part", "lease").Logger()}
	w.group.Go(lease.run)
	w.group.Go(w.sweepLost)
	listening, err := w.control.Listen(w.group.Context(), func(id string) { w.deliverStop(w.group.Context(), id) })
	if err != nil {
		return err
	}
	w.group.Go(func(context.Context) { <-listening })
	if err := w.reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	// After reconcile: what no re-attached instance names is left over.
	w.sweepNetworks(ctx)
	if w.net != nil {
		w.net.Start(w.group.Context())
	}
	// After reconcile: a re-attached instance has its runner by then.
	w.group.Go(w.checkEnds)
	w.group.Go(w.endLeftovers)
	w.group.Go(w.replayLogs)
	w.accel.accelerate(w.group.Context(), w.config())
	w.pools.start(ctx, w.group.Context(), w.config())
	if err := w.rt.EnsureAnchor(ctx, filepath.Join(w.config().Worker.StateDir, "anchor")); err != nil {
		// Only speed depends on it: jobs then start their own shims.
		w.log.Warn().Err(err).Msg("shim anchor not created; each job starts its own shim")
	}
	w.srv = asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency: w.config().Worker.Concurrency,
		Queues:      map[string]int{queue.Name: 1},
		// The default 1 s idle poll would add up to a second to every
		// invoke→RUNNING; 10 ms costs ~100 cheap Redis calls per second
		// per idle worker (measured: 17 ms off the median invoke→RUNNING).
		TaskCheckInterval: 10 * time.Millisecond,
		// Retries and delayed invocations become due within a quarter
		// second (4 cheap Redis calls a second per worker).
		DelayedTaskCheckInterval: 250 * time.Millisecond,
		// In-flight pulls get this long to finish before being re-queued.
		ShutdownTimeout: 30 * time.Second,
		RetryDelayFunc: func(n int, err error, t *asynq.Task) time.Duration {
			if t.Type() == queue.TypeDestination {
				return destinationRetryDelay(n)
			}
			return retryDelay(n, err, time.Duration(w.config().Worker.LimitRetryS)*time.Second)
		},
		// Waiting for a slot is not a failure: it spends no retry budget
		// (SCF's 432 semantics); the event's age bounds the wait.
		IsFailure: func(err error) bool { return !isWait(err) },
		Logger:    asynqLogger{w.log.With().Str("component", "asynq").Logger()},
		LogLevel:  asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(queue.TypeInvoke, w)
	mux.Handle(queue.TypeFirst, w)
	mux.Handle(queue.TypeDestination, deliverer{w})
	if err := w.srv.Start(mux); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	w.log.Info().Str("containerd", w.config().Containerd.Address).Str("namespace", w.config().Containerd.Namespace).Msg("worker started")
	return nil
}

// Stop stops taking tasks and lets in-flight scheduling finish (or
// re-queues it). Running instances are left running: their log driver
// belongs to containerd, and the next Start re-attaches to them.
//
// Order: the asynq server first (no new attempts; scheduling ones finish
// or are re-queued), then acceleration pulls, the provisioned pools
// (their instances removed), the supervisors and listeners (the worker's
// lifetime ends), the shim anchor, and the containerd connection last.
func (w *Worker) Stop(ctx context.Context) error {
	if w.srv != nil {
		w.srv.Shutdown()
	}
	w.accel.stop()
	w.pools.stop(ctx)
	if err := w.group.Stop(ctx); err != nil {
		w.log.Warn().Err(err).Msg("supervisors still busy at shutdown")
	}
	w.targets.close()
	if w.net != nil {
		if err := w.net.Stop(ctx); err != nil {
			w.log.Warn().Err(err).Msg("release ready network namespaces")
		}
	}
	if err := w.rt.RemoveAnchor(ctx); err != nil {
		w.log.Warn().Err(err).Msg("remove shim anchor")
	}
	return w.rt.Close()
}

type asynqLogger struct{ l zerolog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Fatal().Msg(fmt.Sprint(args...)) }

// deadLetter keeps the event of a failed invocation in the dead-letter
// list (SCF's DLQ message).
func (w *Worker) deadLetter(ctx context.Context, id string, code int, msg string) error {
	rec, err := w.records.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("dead-letter %s: %w", id, err)
	}
	event, err := w.records.Event(ctx, id)
	if err != nil {
		return fmt.Errorf("dead-letter %s: event: %w", id, err)
	}
	err = w.dlq.Add(ctx, deadletter.Entry{
		RequestId: id, ErrorCode: code, ErrorMessage: msg, Attempt: rec.Attempt,
		Body: deadletter.Body{
			FunctionName: rec.FunctionName, Namespace: rec.Namespace, Qualifier: rec.Qualifier,
			RequestSource: rec.RequestSource, ClientContext: string(event), PushTime: rec.EnqueueTime, RetryNum: rec.Attempt - 1,
		},
	})
	if err != nil {
		return fmt.Errorf("dead-letter %s: %w", id, err)
	}
	return nil
}

// RuntimeRegistries resolves the config's registry settings (passwords
// from their environment variables) for the runtime.
func RuntimeRegistries(cfg *config.Config) map[string]runtime.Registry {
	out := make(map[string]runtime.Registry, len(cfg.Registries))
	for host, r := range cfg.Registries {
		reg := runtime.Registry{Insecure: r.Insecure, Username: r.Username}
		if r.PasswordEnv != "" {
			reg.Password = os.Getenv(r.PasswordEnv)
		}
		out[host] = reg
	}
	return out
}
