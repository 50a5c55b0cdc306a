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

	mu    sync.Mutex
	want  map[string]config.Function // function → its config
	ready map[string][]*warm
	errs  map[string]string
	kick  chan struct{}
	group *startstop.Group // the fill loop
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

func newWarmPool(rt *runtime.Runtime, cfg func() *config.Config, log zerolog.Logger) *warmPool {
	return &warmPool{rt: rt, config: cfg, log: log, ready: map[string][]*warm{}, errs: map[string]string{},
		want: map[string]config.Function{}, kick: make(chan struct{}, 1)}
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
		if fn.Provisioned > 0 {
			p.want[fn.Name] = fn
		}
	}
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
	var drop []*warm
	for name, list := range p.ready {
		fn, ok := want[name]
		var keep []*warm
		for _, e := range list {
			if ok && len(keep) < fn.Provisioned && e.alive() {
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
			short := len(fresh) < fn.Provisioned
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
		MemoryMB: fn.MemoryMB, PidsLimit: pidsLimit, HostNetwork: fn.Network == "host", Isolation: isolation(fn, cfg),
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
	names := make([]string, 0, len(p.want))
	for k := range p.want {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make(map[string]PoolState, len(names))
	for _, k := range names {
		out[k] = PoolState{Want: p.want[k].Provisioned, Ready: len(p.ready[k]), Error: p.errs[k]}
	}
	return out
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
