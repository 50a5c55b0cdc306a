package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/startstop"
	"github.com/jobgate/jobgate/worker/runtime"
)

// poolCheck is how often the pools are topped up without a prompt (a
// failed create, an image that became available).
const poolCheck = 5 * time.Second

// stubSettle is how long a new warm instance must stay up to count as
// ready: a stub that cannot find the command exits at once.
const stubSettle = 50 * time.Millisecond

// PoolState is one function's provisioned instances on this worker.
type PoolState struct {
	Want  int    `json:"want"`
	Ready int    `json:"ready"`
	Auto  bool   `json:"auto,omitempty"` // Want follows recent demand
	Error string `json:"error,omitempty"`
}

// warmPool keeps `provisioned: N` warm instances per function (SCF
// provisioned concurrency): containers created and started before any
// event, their process a stub waiting for the environment. An event takes
// one, which then only needs its labels and environment; the pool refills
// in the background. Warm instances do not count against capacity_mb.
type warmPool struct {
	rt     *runtime.Runtime
	config func() *config.Config
	log    zerolog.Logger
	life   context.Context // the worker's: instances' waits live on it
	// demand sizes pools when worker.warm.auto is on; now is its clock.
	demand *demand
	now    func() time.Time

	mu     sync.Mutex
	want   map[string]config.Function // function → its config
	counts map[string]int             // function → instances wanted (last fill pass)
	ready  map[string][]*warm
	errs   map[string]string
	kick   chan struct{}
	group  *startstop.Group // the fill loop
}

type warm struct {
	in     *runtime.Instance
	exitC  <-chan runtime.ExitStatus
	digest string // the image it was made from
}

// alive reports whether the warm instance's stub is still up.
func (e *warm) alive() bool {
	select {
	case <-e.exitC:
		return false
	default:
		return true
	}
}

func newWarmPool(rt *runtime.Runtime, cfg func() *config.Config, log zerolog.Logger, d *demand, now func() time.Time) *warmPool {
	return &warmPool{rt: rt, config: cfg, log: log, demand: d, now: now, ready: map[string][]*warm{}, errs: map[string]string{},
		want: map[string]config.Function{}, counts: map[string]int{}, kick: make(chan struct{}, 1)}
}

// sizes is how many warm instances each wanted function should have now:
// its `provisioned`, or more when adaptive pools are on and its recent
// demand asks for more, the adaptive part within warm.max_mb (functions
// in name order).
func (p *warmPool) sizes(want map[string]config.Function) map[string]int {
	w := p.config().Worker.Warm
	out := make(map[string]int, len(want))
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	budget := w.MaxMB
	now := p.now()
	for _, name := range names {
		fn := want[name]
		n := fn.Provisioned
		if w.Auto {
			if extra := p.demand.target(name, now) - n; extra > 0 && fn.MemoryMB > 0 {
				extra = min(extra, budget/fn.MemoryMB)
				budget -= extra * fn.MemoryMB
				n += extra
			}
		}
		out[name] = n
	}
	return out
}

// start removes warm instances left by an earlier run (never taken) and
// starts filling the pools for cfg. life is the worker's lifetime.
func (p *warmPool) start(ctx, life context.Context, cfg *config.Config) {
	p.life = life
	if left, err := p.rt.Warm(ctx); err == nil {
		for id := range left {
			if in, err := p.rt.Load(ctx, id); in != nil {
				_ = in.Remove(ctx)
			} else if err != nil {
				p.log.Warn().Err(err).Str("container", id).Msg("remove leftover warm instance")
			}
		}
	}
	p.setWant(cfg)
	p.group = startstop.Start(life)
	p.group.Go(p.fillLoop)
}

func (p *warmPool) setWant(cfg *config.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = map[string]config.Function{}
	for _, fn := range cfg.Functions {
		if fn.Provisioned > 0 || p.config().Worker.Warm.Auto {
			p.want[fn.Name] = fn
		}
	}
	p.demand.forget(func(name string) bool { _, ok := p.want[name]; return ok })
	for name := range p.errs {
		if _, ok := p.want[name]; !ok {
			delete(p.errs, name)
		}
	}
}

func (p *warmPool) prompt() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// resizePool applies a config change: pools of removed or changed
// functions and lower counts shrink at once, new ones fill.
func (p *warmPool) resize(cfg *config.Config) {
	p.mu.Lock()
	old := p.want
	p.mu.Unlock()
	p.setWant(cfg)
	// A changed function (command, env, limits...) needs new instances.
	p.mu.Lock()
	var drop []*warm
	for name, fn := range p.want {
		if prev, ok := old[name]; ok && !reflect.DeepEqual(prev, fn) {
			drop = append(drop, p.ready[name]...)
			p.ready[name] = nil
		}
	}
	p.mu.Unlock()
	for _, e := range drop {
		p.discard(e)
	}
	p.prompt()
}

// fillLoop tops every pool up to its function's count, and trims pools
// over it, whenever prompted and every poolCheck.
func (p *warmPool) fillLoop(ctx context.Context) {
	t := time.NewTicker(poolCheck)
	defer t.Stop()
	for {
		p.fillOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-t.C:
		}
	}
}

func (p *warmPool) fillOnce(ctx context.Context) {
	p.mu.Lock()
	want := p.want
	p.mu.Unlock()
	counts := p.sizes(want)
	p.mu.Lock()
	p.counts = counts
	var drop []*warm
	for name, list := range p.ready {
		var keep []*warm
		for _, e := range list {
			if len(keep) < counts[name] && e.alive() {
				keep = append(keep, e)
			} else {
				drop = append(drop, e)
			}
		}
		p.ready[name] = keep
	}
	p.mu.Unlock()
	for _, e := range drop {
		p.discard(e)
	}
	for name, fn := range want {
		if ctx.Err() != nil {
			return
		}
		if counts[name] == 0 {
			continue // nothing to keep: not even its image is needed
		}
		pctx, cancel := context.WithTimeout(ctx, p.config().Worker.PullTimeout())
		img, err := p.rt.EnsureImage(pctx, fn.Image)
		cancel()
		if err != nil {
			p.setErr(name, "image: "+err.Error())
			continue
		}
		for ctx.Err() == nil {
			p.mu.Lock()
			var fresh []*warm
			for _, e := range p.ready[name] {
				if e.digest == img.Digest { // the tag may have moved
					fresh = append(fresh, e)
				} else {
					drop = append(drop, e)
				}
			}
			p.ready[name] = fresh
			short := len(fresh) < counts[name]
			p.mu.Unlock()
			if !short {
				break
			}
			e, err := p.newWarm(ctx, fn, img)
			if err != nil {
				p.setErr(name, err.Error())
				break
			}
			p.mu.Lock()
			if cur, still := p.want[name]; still && reflect.DeepEqual(cur, fn) {
				p.ready[name] = append(p.ready[name], e)
				delete(p.errs, name)
				e = nil
			}
			p.mu.Unlock()
			if e != nil {
				p.discard(e)
			}
		}
	}
	for _, e := range drop {
		p.discard(e)
	}
}

// newWarm creates and starts one warm instance of fn.
func (p *warmPool) newWarm(ctx context.Context, fn config.Function, img *runtime.Image) (*warm, error) {
	cfg := p.config()
	id := "jobgate-pool-" + containerSafe(fn.Name) + "-" + randomSuffix()
	// Everything but the event and the request's own variables (they
	// come with the environment at release).
	env := jobenv.Build(img.Env, fn.Env, jobenv.Builtins{FunctionName: fn.Name, Region: cfg.Region, AppID: cfg.AppID, UIN: cfg.UIN}, nil)
	in, err := p.rt.CreateWarm(ctx, runtime.Spec{
		ID: id, Image: img, Command: fn.Command, Args: fn.Args, Env: env,
		MemoryMB: fn.MemoryMB, PidsLimit: pidsLimit, Network: fn.Network, Isolation: isolation(fn, cfg),
		Labels: map[string]string{runtime.LabelPool: fn.Name, runtime.LabelFunction: fn.Name, runtime.LabelNode: cfg.Worker.Node},
	})
	if err != nil {
		return nil, fmt.Errorf("provisioned instance: %w", err)
	}
	exitC, err := in.Wait(p.life)
	if err != nil {
		_ = in.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	select {
	case st := <-exitC:
		_ = in.Remove(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("provisioned instance: its process exited at once (code %d: command not found in the image?)", st.Code)
	case <-time.After(stubSettle):
	}
	return &warm{in: in, exitC: exitC, digest: img.Digest}, nil
}

// discard removes a warm instance that will not be used.
func (p *warmPool) discard(e *warm) {
	if err := e.in.Remove(context.WithoutCancel(p.life)); err != nil {
		p.log.Warn().Err(err).Str("container", e.in.ID).Msg("release provisioned instance")
	}
}

func (p *warmPool) setErr(fn, msg string) {
	p.mu.Lock()
	p.errs[fn] = msg
	p.mu.Unlock()
}

// takeWarm hands out a warm instance of fn made from digest, or nil when
// none is ready; the pool refills in the background.
func (p *warmPool) take(fn, digest string) *warm {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.ready[fn]
	for i, e := range list {
		if e.digest == digest && e.alive() {
			p.ready[fn] = append(list[:i:i], list[i+1:]...)
			p.prompt()
			return e
		}
	}
	return nil
}

// stopPool stops refilling and removes every warm instance not taken.
func (p *warmPool) stop(ctx context.Context) {
	if p.group == nil {
		return
	}
	if err := p.group.Stop(ctx); err != nil {
		p.log.Warn().Err(err).Msg("provisioned pool: fill loop still busy")
	}
	p.mu.Lock()
	var all []*warm
	for _, list := range p.ready {
		all = append(all, list...)
	}
	p.ready = map[string][]*warm{}
	p.mu.Unlock()
	for _, e := range all {
		if err := e.in.Remove(ctx); err != nil {
			p.log.Warn().Err(err).Str("container", e.in.ID).Msg("release provisioned instance")
		}
	}
}

// Provisioned reports each provisioned function's pool on this worker.
func (w *Worker) Provisioned() map[string]PoolState { return w.pools.states() }

func (p *warmPool) states() map[string]PoolState {
	p.mu.Lock()
	defer p.mu.Unlock()
	auto := p.config().Worker.Warm.Auto
	out := make(map[string]PoolState, len(p.want))
	for k, fn := range p.want {
		want := max(fn.Provisioned, p.counts[k])
		if want == 0 && len(p.ready[k]) == 0 && p.errs[k] == "" {
			continue // adaptive and idle
		}
		out[k] = PoolState{Want: want, Ready: len(p.ready[k]), Auto: auto && want > fn.Provisioned, Error: p.errs[k]}
	}
	return out
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
