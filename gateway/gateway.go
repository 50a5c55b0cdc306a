// Package gateway serves jobgate's HTTP API (docs/OPERATIONS.md, "HTTP API"): the invoke API,
// invocation records and logs, health and readiness.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jobgate/jobgate/triggers/httptrigger"

	"golang.org/x/net/netutil"
	"golang.org/x/sync/semaphore"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/control"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/metrics"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/redisconn"
	"github.com/jobgate/jobgate/internal/startstop"
	"github.com/jobgate/jobgate/internal/submit"
)

// maxHeaderBytes bounds a request's header block (net/http's default is
// 1 MiB; webhooks send a few KiB).
const maxHeaderBytes = 64 << 10

// Check is one readiness dependency (Redis, containerd, a broker).
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Deps are the gateway's collaborators.
type Deps struct {
	Config    *config.Config
	Submitter *submit.Submitter
	Records   *record.Store
	Watcher   *record.Watcher
	Logs      *logstore.Store
	// DeadLetters and Redis (for terminate requests to the workers).
	DeadLetters *deadletter.Store
	// DestinationDeadLetters are the destinations' (?kind=destination).
	DestinationDeadLetters *deadletter.Store
	Redis                  redis.UniversalClient
	RedisTarget            redisconn.Target // how to reach it (asynqmon's own client)
	Metrics                *metrics.Metrics
	Ready                  []Check
	Tokens                 []Token          // bearer tokens for /v1; none = open
	Now                    func() time.Time // rate limits and log streams; nil: time.Now
	Logger                 zerolog.Logger
}

// Gateway is the HTTP API server.
type Gateway struct {
	d   Deps
	cfg atomic.Pointer[config.Config]
	// triggerChecks are the broker triggers' readiness (replaced on reload).
	triggerChecks atomic.Pointer[[]Check]
	control       *control.Requests
	info          []readyInfo
	log           zerolog.Logger
	mux           atomic.Pointer[http.ServeMux] // swapped whole by Reload
	srv           *http.Server
	group         *startstop.Group
	ln            net.Listener
	rate          *limiter            // nil: no rate limit
	hosts         map[string]bool     // gateway.allowed_hosts (open API only)
	inflight      *semaphore.Weighted // request body bytes held at once (gateway.max_inflight_mb)
	streams       *streams
	now           func() time.Time
}

// New builds the routes.
func New(d Deps) *Gateway {
	g := &Gateway{d: d, log: d.Logger.With().Str("component", "gateway").Logger(),
		control: control.New(d.Redis, d.Config.Redis.KeyPrefix(), d.Config.Retention()),
		rate:    newLimiter(d.Config.Gateway.RateLimit, d.Config.Gateway.RateBurst),
		streams: &streams{max: d.Config.Gateway.FollowStreams, by: map[string]int{}}, now: d.Now}
	if g.now == nil {
		g.now = time.Now
	}
	g.cfg.Store(d.Config)
	g.hosts = allowedHosts(d.Config.Gateway.AllowedHosts, d.Config.Gateway.Listen)
	if mb := d.Config.Gateway.MaxInflightMB; mb > 0 {
		g.inflight = semaphore.NewWeighted(int64(mb) << 20)
	}
	g.mux.Store(g.buildMux(nil))
	return g
}

// buildMux is the API's routes plus the HTTP triggers' (the config has
// checked they collide with nothing).
func (g *Gateway) buildMux(trs []httptrigger.Trigger) *http.ServeMux {
	mux := http.NewServeMux()
	for pattern, h := range g.routes() {
		mux.Handle(pattern, h)
	}
	for _, tr := range trs {
		h := g.serve(g.httpTrigger(tr))
		for _, p := range tr.Opts.Patterns() {
			mux.Handle(p, h)
		}
	}
	return mux
}

// config is the current config (a reload swaps it).
func (g *Gateway) config() *config.Config { return g.cfg.Load() }

// Reload serves cfg's functions and HTTP triggers from now on: requests
// in flight finish on the routes they started with. The listener and the
// server limits (gateway.*) stay as they started.
func (g *Gateway) Reload(cfg *config.Config, trs []httptrigger.Trigger) {
	g.cfg.Store(cfg)
	g.mux.Store(g.buildMux(trs))
	g.log.Info().Int("functions", len(cfg.Functions)).Int("http_triggers", len(trs)).Msg("routes reloaded")
}

// routes are the API's endpoints by ServeMux pattern: exactly
// config.APIPatterns, against which trigger paths are validated.
func (g *Gateway) routes() map[string]http.Handler {
	metrics := http.Handler(http.NotFoundHandler())
	if g.d.Metrics != nil {
		metrics = promhttp.HandlerFor(g.d.Metrics.Registry, promhttp.HandlerOpts{})
		if g.config().Gateway.MetricsAuth {
			prom := metrics
			metrics = g.auth(ScopeRead, func(w http.ResponseWriter, r *http.Request) (any, error) {
				prom.ServeHTTP(w, r)
				return nil, nil
			})
		}
	}
	return map[string]http.Handler{
		"POST /v1/functions/{name}/invoke":       g.auth(ScopeInvoke, g.invoke),
		"POST /v1/functions/{name}/invoke-batch": g.auth(ScopeInvoke, g.invokeBatch),
		"GET /v1/functions":                      g.auth(ScopeRead, g.listFunctions),
		"GET /v1/cluster":                        g.auth(ScopeRead, g.cluster),
		"GET /ui/":                               console(),
		"/asynqmon/":                             g.asynqmonHandler(),
		"GET /v1/functions/{name}":               g.auth(ScopeRead, g.getFunction),
		"GET /v1/invocations":                    g.auth(ScopeRead, g.listInvocations),
		"GET /v1/invocations/{id}":               g.auth(ScopeRead, g.getInvocation),
		"GET /v1/invocations/{id}/logs":          g.auth(ScopeRead, g.getLogs),
		"GET /v1/invocations/{id}/event":         g.auth(ScopeRead, g.getEvent),
		"POST /v1/invocations/{id}/terminate":    g.auth(ScopeAdmin, g.terminate),
		"GET /v1/deadletters":                    g.auth(ScopeRead, g.listDeadLetters),
		"GET /v1/deadletters/{id}":               g.auth(ScopeRead, g.getDeadLetter),
		"POST /v1/deadletters/{id}/redrive":      g.auth(ScopeAdmin, g.redrive),
		"DELETE /v1/deadletters/{id}":            g.auth(ScopeAdmin, g.deleteDeadLetter),
		"GET /healthz":                           http.HandlerFunc(g.healthz),
		"GET /readyz":                            http.HandlerFunc(g.readyz),
		"GET /metrics":                           metrics,
		"/v1/": g.serve(func(_ http.ResponseWriter, r *http.Request) (any, error) {
			return nil, notFound(codeNotFound, "no API endpoint %s %s", r.Method, r.URL.Path)
		}),
	}
}

// ServeHTTP routes r; what no route takes gets the JSON error shape
// (ServeMux's own 404 and 405 are text/plain).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.d.Metrics == nil {
		g.route(w, r)
		return
	}
	start := time.Now()
	_, pattern := g.mux.Load().Handler(r)
	if pattern == "" {
		pattern = "unmatched" // bounded: not the path
	}
	cw := &codeWriter{ResponseWriter: w}
	g.route(cw, r)
	if cw.code == 0 {
		cw.code = http.StatusOK
	}
	g.d.Metrics.HTTPRequests.WithLabelValues(pattern, strconv.Itoa(cw.code)).Inc()
	g.d.Metrics.HTTPSeconds.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
}

// codeWriter keeps the status code of an answer for the metrics; it
// passes Flush (log streams) and Unwrap (http.ResponseController) on.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

func (c *codeWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// route answers r: rate limit, then the mux, with JSON 404/405.
func (g *Gateway) route(w http.ResponseWriter, r *http.Request) {
	if g.rate != nil && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
		if ok, wait := g.rate.allow(g.client(r), g.now()); !ok {
			g.rateLimited(w, r, wait)
			return
		}
	}
	if guardedPath(r.URL.Path) {
		// An open API (no tokens) answers only to its own names, so a
		// rebound name cannot read it; and nothing changes state for
		// another site's page, tokens or not.
		if len(g.d.Tokens) == 0 && !hostAllowed(g.hosts, r) {
			g.writeError(w, r, &apiError{status: http.StatusMisdirectedRequest, code: codeHostNotAllowed,
				msg: fmt.Sprintf("this gateway does not answer to host %q (gateway.allowed_hosts)", normalHost(r.Host))}, "")
			return
		}
		if stateChanging(r.Method) && crossSite(r) {
			g.writeError(w, r, &apiError{status: http.StatusForbidden, code: codeCrossSite,
				msg: "cross-site requests are refused (Origin is not this gateway, or Sec-Fetch-Site: cross-site)"}, "")
			return
		}
	}
	defer g.meter(r)()
	mux := g.mux.Load()
	h, pattern := mux.Handler(r)
	if pattern != "" {
		mux.ServeHTTP(w, r) // it sets the path values
		return
	}
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		g.writeError(w, r, &apiError{status: http.StatusMethodNotAllowed, code: codeMethodNotAllowed,
			msg: fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.header.Get("Allow"))}, "")
		return
	}
	g.writeError(w, r, notFound(codeNotFound, "nothing is served at %s %s", r.Method, r.URL.Path), "")
}

// statusRecorder keeps what ServeMux's fallback handler would answer.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

// Start listens on the configured address.
func (g *Gateway) Start(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", g.config().Gateway.Listen)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", g.config().Gateway.Listen, err)
	}
	gw := g.config().Gateway
	g.ln = netutil.LimitListener(ln, gw.MaxConns)
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeaderBytes,
		ReadTimeout: sec(gw.ReadTimeoutS), WriteTimeout: sec(gw.WriteTimeoutS), IdleTimeout: sec(gw.IdleTimeoutS)}
	g.group = startstop.Start(ctx)
	g.group.Go(func(context.Context) {
		if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error().Err(err).Msg("serve")
		}
	})
	g.log.Info().Str("listen", ln.Addr().String()).Msg("gateway listening")
	return nil
}

// Addr is the bound address (after Start).
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Stop stops accepting requests and waits for in-flight ones.
func (g *Gateway) Stop(ctx context.Context) error {
	if g.srv == nil {
		return nil
	}
	err := g.srv.Shutdown(ctx)
	return errors.Join(err, g.group.Stop(ctx))
}

func (g *Gateway) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz: Redis and containerd decide readiness; broker triggers are
// reported (under "triggers") but do not: a broker outage must not take
// the API and the webhooks down with it.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	info := g.info
	if tc := g.triggerChecks.Load(); tc != nil && len(*tc) > 0 {
		checks := *tc
		info = append(append([]readyInfo{}, info...), readyInfo{name: "triggers", fn: func() any {
			out := map[string]string{}
			for _, c := range checks {
				out[c.Name] = "ok"
				if err := c.Fn(r.Context()); err != nil {
					out[c.Name] = "unavailable"
				}
			}
			return out
		}})
	}
	writeReady(w, r, g.d.Ready, info, g.log)
}

// SetTriggerChecks replaces the broker triggers' readiness checks.
func (g *Gateway) SetTriggerChecks(c []Check) { g.triggerChecks.Store(&c) }

// writeReady runs the checks and answers /readyz: 200 when all pass, 503
// naming the dependencies that are down.
func writeReady(w http.ResponseWriter, r *http.Request, checks []Check, info []readyInfo, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	status, results := http.StatusOK, map[string]string{}
	for _, c := range checks {
		if err := c.Fn(ctx); err != nil {
			// Which dependency is down, not its address or error text
			// (the endpoint is open): the detail goes to the log.
			log.Warn().Err(err).Str("check", c.Name).Msg("not ready")
			status, results[c.Name] = http.StatusServiceUnavailable, "unavailable"
			continue
		}
		results[c.Name] = "ok"
	}
	out := map[string]any{"ready": status == http.StatusOK, "checks": results}
	for _, i := range info {
		out[i.name] = i.fn()
	}
	writeJSON(w, status, out)
}

// OpsHandler serves /healthz, /readyz (checks) and /metrics for a
// process without the API: a worker-only node's worker.listen.
func OpsHandler(checks []Check, m *metrics.Metrics, log zerolog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { writeReady(w, r, checks, nil, log) })
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}

// AddReadyInfo adds a /readyz section that informs without deciding
// readiness (e.g. image acceleration progress).
func (g *Gateway) AddReadyInfo(name string, fn func() any) {
	g.info = append(g.info, readyInfo{name: name, fn: fn})
}

type readyInfo struct {
	name string
	fn   func() any
}

// AddReadyChecks adds dependencies to /readyz (before Start).
func (g *Gateway) AddReadyChecks(c ...Check) { g.d.Ready = append(g.d.Ready, c...) }

// SetWatcher sets the record watcher used by wait=scheduled (it needs a
// live subscription, made at Start).
func (g *Gateway) SetWatcher(w *record.Watcher) { g.d.Watcher = w }
