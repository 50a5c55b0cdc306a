package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/jobgate/jobgate/internal/config"
)

// poolCheck is how often the pools are topped up without a prompt (a
// failed prepare, an image that became available).
const poolCheck = 5 * time.Second

// PoolState is one function's provisioned instances on this worker.
type PoolState struct {
	Want  int    `json:"want"`
	Ready int    `json:"ready"`
	Error string `json:"error,omitempty"`
}

// rootfsPool keeps `provisioned: N` prepared root filesystems per function
// (SCF provisioned concurrency): an event takes one and skips preparing
// its snapshot; the pool refills in the background.
type rootfsPool struct {
	mu     sync.Mutex
	want   map[string]config.Function // function → its config
	ready  map[string][]pooled
	errs   map[string]string
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

type pooled struct {
	key    string
	digest string // the image the rootfs was made from
}

// startPool releases root filesystems left by an earlier run and starts
// filling the pools for cfg.
func (w *Worker) startPool(ctx context.Context, cfg *config.Config) {
	p := &w.pool
	p.ready, p.errs, p.kick = map[string][]pooled{}, map[string]string{}, make(chan struct{}, 1)
	if left, err := w.rt.PreparedRootfs(ctx); err == nil {
		for key := range left {
			_ = w.rt.RemoveRootfs(ctx, key)
		}
	}
	p.setWant(cfg)
	lctx, cancel := context.WithCancel(w.life)
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		w.fillLoop(lctx)
	}()
}

func (p *rootfsPool) setWant(cfg *config.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = map[string]config.Function{}
	for _, fn := range cfg.Functions {
		if fn.Provisioned > 0 {
			p.want[fn.Name] = fn
		}
	}
}

func (p *rootfsPool) prompt() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// resizePool applies a config change: pools of removed functions, changed
// images or lower counts shrink at once, new ones fill.
func (w *Worker) resizePool(cfg *config.Config) {
	w.pool.setWant(cfg)
	w.pool.prompt()
}

// fillLoop tops every pool up to its function's count, and trims pools
// over it, whenever prompted and every poolCheck.
func (w *Worker) fillLoop(ctx context.Context) {
	t := time.NewTicker(poolCheck)
	defer t.Stop()
	for {
		w.fillOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.pool.kick:
		case <-t.C:
		}
	}
}

func (w *Worker) fillOnce(ctx context.Context) {
	p := &w.pool
	p.mu.Lock()
	want := p.want
	var drop []pooled
	for name, list := range p.ready {
		fn, ok := want[name]
		keep := list[:0]
		for _, e := range list {
			if ok && len(keep) < fn.Provisioned {
				keep = append(keep, e)
			} else {
				drop = append(drop, e)
			}
		}
		p.ready[name] = keep
	}
	p.mu.Unlock()
	for _, e := range drop {
		w.discard(ctx, e)
	}
	drop = nil
	for name, fn := range want {
		if ctx.Err() != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, w.config().Worker.PullTimeout())
		img, err := w.rt.EnsureImage(pctx, fn.Image)
		cancel()
		if err != nil {
			p.setErr(name, "image: "+err.Error())
			continue
		}
		for {
			p.mu.Lock()
			// Rootfs made from an image the tag no longer points at go.
			list := p.ready[name]
			fresh := list[:0]
			for _, e := range list {
				if e.digest == img.Digest {
					fresh = append(fresh, e)
				} else {
					drop = append(drop, e)
				}
			}
			p.ready[name] = fresh
			short := len(fresh) < fn.Provisioned
			p.mu.Unlock()
			if !short || ctx.Err() != nil {
				break
			}
			key := "jobgate-pool-" + name + "-" + randomSuffix()
			if err := w.rt.PrepareRootfs(ctx, img, key, name); err != nil {
				p.setErr(name, err.Error())
				break
			}
			p.mu.Lock()
			if _, still := p.want[name]; still {
				p.ready[name] = append(p.ready[name], pooled{key: key, digest: img.Digest})
				delete(p.errs, name)
				key = ""
			}
			p.mu.Unlock()
			if key != "" {
				_ = w.rt.RemoveRootfs(ctx, key)
			}
		}
	}
	for _, e := range drop {
		w.discard(ctx, e)
	}
}

func (w *Worker) discard(ctx context.Context, e pooled) {
	if err := w.rt.RemoveRootfs(context.WithoutCancel(ctx), e.key); err != nil {
		w.log.Warn().Err(err).Str("rootfs", e.key).Msg("release provisioned rootfs")
	}
}

func (p *rootfsPool) setErr(fn, msg string) {
	p.mu.Lock()
	p.errs[fn] = msg
	p.mu.Unlock()
}

// takeRootfs hands out a prepared root filesystem of fn made from digest,
// or "" when none is ready; the pool refills in the background.
func (w *Worker) takeRootfs(fn, digest string) string {
	p := &w.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.ready[fn]
	for i, e := range list {
		if e.digest == digest {
			p.ready[fn] = append(list[:i:i], list[i+1:]...)
			p.prompt()
			return e.key
		}
	}
	return ""
}

// stopPool stops refilling and releases every root filesystem not taken.
func (w *Worker) stopPool(ctx context.Context) {
	p := &w.pool
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.mu.Lock()
	var all []pooled
	for _, list := range p.ready {
		all = append(all, list...)
	}
	p.ready = map[string][]pooled{}
	p.mu.Unlock()
	for _, e := range all {
		if err := w.rt.RemoveRootfs(ctx, e.key); err != nil {
			w.log.Warn().Err(err).Str("rootfs", e.key).Msg("release provisioned rootfs")
		}
	}
}

// Provisioned reports each provisioned function's pool on this worker.
func (w *Worker) Provisioned() map[string]PoolState {
	p := &w.pool
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
