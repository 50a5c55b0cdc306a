// Package node assembles one jobgate process from its configuration: the
// shared Redis client and stores, and the roles it runs (gateway, worker,
// or both). cmd/jobgate's serve and the integration tests both use it.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
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
	rdb     *redis.Client
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
}

// RedisOptions turns the config into go-redis options.
func RedisOptions(c config.Redis) (*redis.Options, error) {
	var o *redis.Options
	if c.URL != "" {
		var err error
		if o, err = redis.ParseURL(c.URL); err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
	} else {
		o = &redis.Options{Addr: c.Addr, DB: c.DB}
	}
	if c.Username != "" {
		o.Username = c.Username
	}
	if c.PasswordEnv != "" {
		o.Password = os.Getenv(c.PasswordEnv)
	}
	return o, nil
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
	ro, err := RedisOptions(cfg.Redis)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, opts: o, rdb: redis.NewClient(ro)}
	records := record.NewStore(n.rdb, cfg.Redis.Prefix, cfg.Retention())
	logs := logstore.NewStore(n.rdb, cfg.Redis.Prefix, cfg.Retention(), cfg.Worker.LogMaxBytes)
	m := metrics.New(n.rdb, cfg.Redis.Prefix)
	n.metrics = m
	dlqLog := o.Logger.With().Str("component", "deadletter").Logger()
	dlq := deadletter.NewStore(n.rdb, cfg.Redis.Prefix, deadletter.Limits{
		Retention: cfg.DeadLetterRetention(), Max: cfg.DeadLetter.Max,
		Dropped: func(fn, reason string, ids []string, count int) {
			m.DeadLettersDropped.WithLabelValues(fn, reason).Add(float64(count))
			dlqLog.Warn().Str("function", fn).Str("reason", reason).Int("count", count).Strs("request_ids", ids).Msg("dead letters dropped by the list's bounds")
		},
	})
	sub := submit.New(cfg, records, asynq.NewClientFromRedisClient(n.rdb)).WithMetrics(m)
	n.Sweeper = &submit.Sweeper{Submitter: sub, Records: records, Tasks: asynq.NewInspectorFromRedisClient(n.rdb), Redis: n.rdb,
		Keys: keyspace.New(cfg.Redis.Prefix), OrphanAfter: cfg.Submit.OrphanAfter(), Log: o.Logger.With().Str("component", "sweeper").Logger()}
	ready := []gateway.Check{{Name: "redis", Fn: func(ctx context.Context) error { return n.rdb.Ping(ctx).Err() }}}

	if o.Role != RoleGateway {
		n.Worker, err = worker.New(ctx, worker.Deps{Config: cfg, Redis: n.rdb, Records: records, Logs: logs,
			DeadLetters: dlq, Submitter: sub, Metrics: m, Logger: o.Logger, Clock: o.Clock},
			// The URL carries TLS (rediss://) and its options: the log
			// driver connects as the worker does.
			logdriver.Settings{RedisURL: cfg.Redis.URL, RedisAddr: ro.Addr, RedisDB: ro.DB, Username: ro.Username, Password: ro.Password,
				Prefix: cfg.Redis.Prefix, RetentionMs: cfg.Retention().Milliseconds(), MaxBytes: cfg.Worker.LogMaxBytes})
		if err != nil {
			n.rdb.Close()
			return nil, err
		}
		ready = append(ready, gateway.Check{Name: "containerd", Fn: n.Worker.Runtime().Ping})
	}
	n.opsReady = ready
	if o.Role != RoleWorker {
		tokens, err := gateway.ParseTokens(o.Tokens)
		if err != nil {
			n.rdb.Close()
			return nil, err
		}
		n.Gateway = gateway.New(gateway.Deps{
			Config: cfg, Submitter: sub, Records: records, Logs: logs, DeadLetters: dlq, Redis: n.rdb, Metrics: m,
			Ready: ready, Tokens: tokens, Logger: o.Logger, Now: o.Clock.Now,
		})
		hts, err := httptrigger.Triggers(cfg)
		if err != nil {
			n.rdb.Close()
			return nil, err
		}
		n.Gateway.MountHTTPTriggers(hts)
		if n.Timers, err = timer.New(cfg, sub, n.rdb, o.Logger, o.Clock); err != nil {
			n.rdb.Close()
			return nil, err
		}
		if n.Sources, err = sources.Build(sources.Deps{Config: cfg, Sink: sub, DeadLetters: dlq, Redis: n.rdb, Logger: o.Logger, Metrics: m}); err != nil {
			n.rdb.Close()
			return nil, err
		}
		for _, s := range n.Sources {
			n.Gateway.AddReadyChecks(gateway.Check{Name: "trigger " + s.Name(), Fn: func(context.Context) error { return s.Health() }})
		}
		if n.Worker != nil {
			n.Gateway.AddReadyInfo("acceleration", func() any { return n.Worker.Acceleration() })
			n.Gateway.AddReadyInfo("provisioned", func() any { return n.Worker.Provisioned() })
		}
	}
	return n, nil
}

// Reload applies a changed config file (SIGHUP). The worker takes the new
// functions (image, command, env, limits, acceleration, provisioned) for
// its next events; the gateway, timers and broker triggers keep the config
// they started with until a restart.
func (n *Node) Reload(ctx context.Context, cfg *config.Config) {
	if n.Worker != nil {
		n.Worker.Reload(ctx, cfg)
	}
	if n.Gateway != nil {
		n.opts.Logger.Warn().Msg("config reloaded for the worker only: gateway, routes, timers and broker triggers change at the next restart")
	}
}

// Start starts the worker (re-attaching to running instances first), then
// the gateway.
func (n *Node) Start(ctx context.Context) error {
	if err := n.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", n.rdb.Options().Addr, err)
	}
	if n.Worker != nil {
		if err := n.Worker.Start(ctx); err != nil {
			return err
		}
	}
	n.group = startstop.Start(ctx)
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
		w, err := record.NewStore(n.rdb, n.cfg.Redis.Prefix, n.cfg.Retention()).NewWatcher(ctx)
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
	errs = append(errs, n.rdb.Close())
	return errors.Join(errs...)
}

// Redis returns the node's Redis client.
func (n *Node) Redis() redis.UniversalClient { return n.rdb }

// RedisClient returns the node's Redis client with its options.
func (n *Node) RedisClient() *redis.Client { return n.rdb }
