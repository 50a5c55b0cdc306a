// Package node assembles one jobgate process from its configuration: the
// shared Redis client and stores, and the roles it runs (gateway, worker,
// or both). cmd/jobgate's serve and the integration tests both use it.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/gateway"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/metrics"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/redisconn"
	"github.com/jobgate/jobgate/internal/startstop"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/triggers"
	"github.com/jobgate/jobgate/triggers/httptrigger"
	"github.com/jobgate/jobgate/triggers/sources"
	"github.com/jobgate/jobgate/triggers/timer"
	"github.com/jobgate/jobgate/worker"
	"github.com/jobgate/jobgate/worker/logdriver"
)

// Roles a node can run.
const (
	RoleAll     = "all"
	RoleGateway = "gateway"
	RoleWorker  = "worker"
)

// Options for New.
type Options struct {
	Role   string
	Tokens []string
	Logger zerolog.Logger
	// Clock drives the timer triggers' schedules, the gateway's rate
	// limits and the worker's tag
	// recheck window; nil is the real clock (tests pass a fake one).
	Clock clockwork.Clock
}

// Node is a running jobgate process.
type Node struct {
	cfg     *config.Config
	opts    Options
	rdb     redis.UniversalClient
	target  redisconn.Target
	watcher *record.Watcher
	Gateway *gateway.Gateway
	Timers  *timer.Timers
	Sources []triggers.Source
	Worker  *worker.Worker
	// Sweeper queues orphaned PENDING invocations again (every role runs
	// one; a Redis lock lets one sweep at a time).
	Sweeper *submit.Sweeper
	group   *startstop.Group
	// ops serves worker.listen (/metrics, /healthz, /readyz) when the
	// node has no gateway.
	ops      *http.Server
	opsReady []gateway.Check
	metrics  *metrics.Metrics
	// What a reload rebuilds the triggers from.
	mu         sync.Mutex // one reload at a time
	sub        *submit.Submitter
	srcDeps    sources.Deps
	sourceKeys []string // per Sources[i]: its trigger's identity and options (reloadKey)
	started    context.Context
}

// TokensFromEnv reads JOBGATE_TOKENS (comma-separated "token" or
// "token:scope[+scope]" entries; gateway.ParseTokens).
func TokensFromEnv() []string {
	var out []string
	for _, t := range strings.Split(os.Getenv("JOBGATE_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// New connects and builds the roles; Start starts them.
func New(ctx context.Context, cfg *config.Config, o Options) (*Node, error) {
	if o.Role == "" {
		o.Role = RoleAll
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Role != RoleAll && o.Role != RoleGateway && o.Role != RoleWorker {
		return nil, fmt.Errorf("unknown role %q (all, gateway or worker)", o.Role)
	}
	target := redisconn.Resolve(cfg.Redis)
	rdb, err := target.Client()
	if err != nil {
		return nil, err
	}
	// The submit path's own client never resends by itself: it must know
	// whether a write whose answer was lost may have run (submit.New).
	commitRDB, err := target.Client(redisconn.NoRetries, redisconn.RESP2)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, opts: o, rdb: rdb, target: target}
	records := record.NewStore(n.rdb, cfg.Redis.KeyPrefix(), cfg.Retention())
	logs := logstore.NewStore(n.rdb, cfg.Redis.KeyPrefix(), cfg.Retention(), cfg.Worker.LogMaxBytes)
	m := metrics.New(n.rdb, cfg.Redis.KeyPrefix())
	n.metrics = m
	dlqLog := o.Logger.With().Str("component", "deadletter").Logger()
	dlq := deadletter.NewStore(n.rdb, cfg.Redis.KeyPrefix(), deadletter.Limits{
		Retention: cfg.DeadLetterRetention(), Max: cfg.DeadLetter.Max,
		Dropped: func(fn, reason string, ids []string, count int) {
			m.DeadLettersDropped.WithLabelValues(fn, reason).Add(float64(count))
			dlqLog.Warn().Str("function", fn).Str("reason", reason).Int("count", count).Strs("request_ids", ids).Msg("dead letters dropped by the list's bounds")
		},
	})
	// Destinations' failed deliveries: a list of their own, same bounds.
	destDLQ := deadletter.NewStore(n.rdb, cfg.Redis.KeyPrefix()+":destination", deadletter.Limits{
		Retention: cfg.DeadLetterRetention(), Max: cfg.DeadLetter.Max,
		Dropped: func(fn, reason string, ids []string, count int) {
			dlqLog.Warn().Str("function", fn).Str("reason", reason).Int("count", count).Strs("deliveries", ids).Msg("destination dead letters dropped by the list's bounds")
		},
	})
	sub := submit.New(cfg, n.rdb, records, asynq.NewClientFromRedisClient(n.rdb)).WithCommitClient(commitRDB).WithMetrics(m)
	n.sub = sub
	n.Sweeper = &submit.Sweeper{Submitter: sub, Records: records, Tasks: asynq.NewInspectorFromRedisClient(n.rdb), Redis: n.rdb,
		Keys: keyspace.New(cfg.Redis.KeyPrefix()), OrphanAfter: cfg.Submit.OrphanAfter(), Log: o.Logger.With().Str("component", "sweeper").Logger()}
	ready := []gateway.Check{{Name: "redis", Fn: func(ctx context.Context) error { return n.rdb.Ping(ctx).Err() }}}

	if o.Role != RoleGateway {
		n.Worker, err = worker.New(ctx, worker.Deps{Config: cfg, Redis: n.rdb, Records: records, Logs: logs,
			DeadLetters: dlq, DestinationDeadLetters: destDLQ, Submitter: sub, Metrics: m, Logger: o.Logger, Clock: o.Clock},
			// The log driver connects as the worker does (topology, TLS,
			// credentials).
			logdriver.Settings{Redis: target, Prefix: cfg.Redis.KeyPrefix(), RetentionMs: cfg.Retention().Milliseconds(), MaxBytes: cfg.Worker.LogMaxBytes})
		if err != nil {
			n.closeRedis()
			return nil, err
		}
		ready = append(ready, gateway.Check{Name: "containerd", Fn: n.Worker.Runtime().Ping})
	}
	n.opsReady = ready
	if o.Role != RoleWorker {
		tokens, err := gateway.ParseTokens(o.Tokens)
		if err != nil {
			n.closeRedis()
			return nil, err
		}
		n.Gateway = gateway.New(gateway.Deps{
			Config: cfg, Submitter: sub, Records: records, Logs: logs, DeadLetters: dlq, DestinationDeadLetters: destDLQ, Redis: n.rdb, RedisTarget: target, Metrics: m,
			Ready: ready, Tokens: tokens, Logger: o.Logger, Now: o.Clock.Now,
		})
		hts, err := httptrigger.Triggers(cfg)
		if err != nil {
			n.closeRedis()
			return nil, err
		}
		n.Gateway.MountHTTPTriggers(hts)
		if n.Timers, err = timer.New(cfg, sub, n.rdb, o.Logger, o.Clock); err != nil {
			n.closeRedis()
			return nil, err
		}
		n.srcDeps = sources.Deps{Config: cfg, Sink: sub, DeadLetters: dlq, Redis: n.rdb, RedisTarget: target, Logger: o.Logger, Metrics: m}
		if n.Sources, n.sourceKeys, err = buildSources(n.srcDeps); err != nil {
			n.closeRedis()
			return nil, err
		}
		n.setTriggerChecks()
		if n.Worker != nil {
			n.Gateway.AddReadyInfo("acceleration", func() any { return n.Worker.Acceleration() })
			n.Gateway.AddReadyInfo("provisioned", func() any { return n.Worker.Provisioned() })
			if d := n.Worker.Degraded(); len(d) > 0 {
				n.Gateway.AddReadyInfo("degraded", func() any { return d })
			}
		}
	}
	return n, nil
}

// Reload applies a changed, valid config (SIGHUP) to every role without a
// restart: the submitter and gateway serve the new functions and HTTP
// triggers (requests in flight finish on the old routes); the timers are
// replaced (an instant missed in between fires once, catchup: last); a
// broker trigger that was removed or changed is stopped — what it fetched
// but did not acknowledge stays with the broker — and the new ones start,
// while unchanged ones keep running; the worker takes the new functions
// for its next events. Listen addresses, Redis, containerd and server
// limits keep what they started with.
func (n *Node) Reload(ctx context.Context, cfg *config.Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	log := n.opts.Logger.With().Str("component", "reload").Logger()
	n.sub.SetConfig(cfg)
	if n.Worker != nil {
		n.Worker.Reload(ctx, cfg)
	}
	var errs []error
	if n.Gateway != nil {
		hts, err := httptrigger.Triggers(cfg)
		if err != nil {
			return err
		}
		n.Gateway.Reload(cfg, hts)
		timers, err := timer.New(cfg, n.sub, n.rdb, n.opts.Logger, n.opts.Clock)
		if err != nil {
			return err
		}
		errs = append(errs, n.Timers.Stop(ctx))
		if n.started != nil {
			errs = append(errs, timers.Start(n.started))
		}
		n.Timers = timers
		errs = append(errs, n.reloadSources(ctx, cfg, log))
	}
	n.cfg = cfg
	log.Info().Int("functions", len(cfg.Functions)).Msg("config reloaded")
	return errors.Join(errs...)
}

// reloadSources stops the broker triggers cfg no longer has (or has
// changed) and starts the ones it adds.
func (n *Node) reloadSources(ctx context.Context, cfg *config.Config, log zerolog.Logger) error {
	n.srcDeps.Config = cfg
	want := map[string]bool{}
	for _, k := range reloadKeys(cfg) {
		want[k] = true
	}
	var keep []triggers.Source
	var keepKeys []string
	var errs []error
	have := map[string]bool{}
	for i, src := range n.Sources {
		if want[n.sourceKeys[i]] {
			keep, keepKeys = append(keep, src), append(keepKeys, n.sourceKeys[i])
			have[n.sourceKeys[i]] = true
			continue
		}
		log.Info().Str("trigger", src.Name()).Msg("stopping a removed or changed trigger")
		errs = append(errs, sources.Stop(ctx, []triggers.Source{src}))
	}
	for _, fn := range cfg.Functions {
		for _, tr := range fn.Triggers {
			k := reloadKey(fn.Name, tr)
			if !sources.IsQueue(tr.Type) || have[k] {
				continue
			}
			src, err := sources.One(n.srcDeps, fn.Name, tr)
			if err == nil && n.started != nil {
				err = src.Start(n.started)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("trigger %s/%s: %w", fn.Name, tr.Name, err))
				continue
			}
			log.Info().Str("trigger", src.Name()).Msg("started a new or changed trigger")
			keep, keepKeys = append(keep, src), append(keepKeys, k)
		}
	}
	n.Sources, n.sourceKeys = keep, keepKeys
	n.setTriggerChecks()
	return errors.Join(errs...)
}

// buildSources makes the config's broker triggers with their reload keys.
func buildSources(d sources.Deps) ([]triggers.Source, []string, error) {
	var srcs []triggers.Source
	var keys []string
	for _, fn := range d.Config.Functions {
		for _, tr := range fn.Triggers {
			if !sources.IsQueue(tr.Type) {
				continue
			}
			src, err := sources.One(d, fn.Name, tr)
			if err != nil {
				return nil, nil, err
			}
			srcs, keys = append(srcs, src), append(keys, reloadKey(fn.Name, tr))
		}
	}
	return srcs, keys, nil
}

// reloadKey identifies a broker trigger with everything that configures
// it: a reload restarts the trigger when any of it changed.
func reloadKey(function string, tr config.Trigger) string {
	b, _ := json.Marshal(struct {
		F string
		T config.Trigger
		O config.QueueTrigger
	}{function, tr, tr.Queue()})
	return string(b)
}

func reloadKeys(cfg *config.Config) []string {
	var out []string
	for _, fn := range cfg.Functions {
		for _, tr := range fn.Triggers {
			if sources.IsQueue(tr.Type) {
				out = append(out, reloadKey(fn.Name, tr))
			}
		}
	}
	return out
}

// setTriggerChecks reports the current broker triggers in /readyz.
func (n *Node) setTriggerChecks() {
	var checks []gateway.Check
	for _, s := range n.Sources {
		checks = append(checks, gateway.Check{Name: "trigger " + s.Name(), Fn: func(context.Context) error { return s.Health() }})
	}
	n.Gateway.SetTriggerChecks(checks)
}

// Start starts the worker (re-attaching to running instances first), then
// the gateway.
func (n *Node) Start(ctx context.Context) error {
	if err := n.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis (%s): %w", n.target, err)
	}
	if n.Worker != nil {
		if err := n.Worker.Start(ctx); err != nil {
			return err
		}
	}
	n.group = startstop.Start(ctx)
	n.started = n.group.Context() // what triggers started by a reload live on
	n.group.Go(n.Sweeper.Run)
	if n.Gateway == nil && n.cfg.Worker.Listen != "" {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", n.cfg.Worker.Listen)
		if err != nil {
			return fmt.Errorf("worker listen %s: %w", n.cfg.Worker.Listen, err)
		}
		n.ops = &http.Server{Handler: gateway.OpsHandler(n.opsReady, n.metrics, n.opts.Logger), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		n.group.Go(func(context.Context) {
			if err := n.ops.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.opts.Logger.Error().Err(err).Msg("worker listen")
			}
		})
		n.opts.Logger.Info().Str("listen", ln.Addr().String()).Msg("worker serving /metrics, /healthz, /readyz")
	}
	if n.Gateway != nil {
		w, err := record.NewStore(n.rdb, n.cfg.Redis.KeyPrefix(), n.cfg.Retention()).NewWatcher(ctx)
		if err != nil {
			return err
		}
		n.watcher = w
		n.Gateway.SetWatcher(w)
		if err := n.Gateway.Start(ctx); err != nil {
			return err
		}
		if err := n.Timers.Start(ctx); err != nil {
			return err
		}
		if err := sources.Start(ctx, n.Sources); err != nil {
			return err
		}
	}
	return nil
}

// Stop shuts down in order: broker consumers stop (unacknowledged messages
// stay with their brokers), timers stop firing, the gateway stops taking
// requests, the worker stops taking tasks (running instances keep running
// and are re-attached by the next start), the orphan sweeper stops, then
// the Redis connections close.
func (n *Node) Stop(ctx context.Context) error {
	var errs []error
	errs = append(errs, sources.Stop(ctx, n.Sources))
	if n.Timers != nil {
		errs = append(errs, n.Timers.Stop(ctx))
	}
	if n.Gateway != nil {
		errs = append(errs, n.Gateway.Stop(ctx))
	}
	if n.Worker != nil {
		errs = append(errs, n.Worker.Stop(ctx))
	}
	if n.ops != nil {
		errs = append(errs, n.ops.Shutdown(ctx))
	}
	errs = append(errs, n.group.Stop(ctx)) // the sweeper, the ops server
	if n.watcher != nil {
		errs = append(errs, n.watcher.Close())
	}
	errs = append(errs, n.sub.Close(), n.rdb.Close())
	return errors.Join(errs...)
}

// closeRedis releases the node's Redis clients when New fails.
func (n *Node) closeRedis() {
	if n.sub != nil {
		n.sub.Close()
	}
	n.rdb.Close()
}

// Redis returns the node's Redis client.
func (n *Node) Redis() redis.UniversalClient { return n.rdb }

// RedisTarget says how the node reaches Redis (for clients of its own).
func (n *Node) RedisTarget() redisconn.Target { return n.target }
