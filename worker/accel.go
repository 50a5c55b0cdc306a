package worker

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/startstop"
	"github.com/jobgate/jobgate/worker/runtime"
)

// accelRetry is how soon a failed acceleration pull is tried again.
const accelRetry = 30 * time.Second

// AccelState is where one accelerated function's image stands on this
// worker (shown in /readyz).
type AccelState struct {
	Image  string `json:"image"`
	State  string `json:"state"` // pulling | pinned | failed
	Digest string `json:"digest,omitempty"`
	Error  string `json:"error,omitempty"`
	Since  string `json:"since"`
}

// accelerator pulls, unpacks and pins the images of functions with
// acceleration: true (SCF image acceleration), so their events never wait
// for a pull.
type accelerator struct {
	rt     *runtime.Runtime
	config func() *config.Config
	log    zerolog.Logger
	now    func() time.Time

	mu    sync.Mutex
	state map[string]AccelState // function → state
	round *startstop.Group      // the current round's pulls
}

// accelerate starts a round for cfg: every accelerated function's image is
// pulled (retrying until it succeeds) and pinned, and pins of functions
// no longer accelerated are released. A new round (config change) cancels
// the previous one's pulls first.
func (a *accelerator) accelerate(life context.Context, cfg *config.Config) {
	a.stop()
	round := startstop.Start(life)
	ctx := round.Context()
	want := map[string]string{}
	for _, fn := range cfg.Functions {
		if fn.Acceleration {
			want[fn.Name] = fn.Image
		}
	}
	a.mu.Lock()
	a.round = round
	old := a.state
	a.state = map[string]AccelState{}
	for name, img := range want {
		if st, ok := old[name]; ok && st.Image == img && st.State == "pinned" {
			a.state[name] = st // unchanged: re-checked below, shown as pinned meanwhile
			continue
		}
		a.state[name] = AccelState{Image: img, State: "pulling", Since: a.now().UTC().Format(time.RFC3339)}
	}
	a.mu.Unlock()

	// Release what is no longer wanted.
	if keys, err := a.rt.Pins(ctx); err == nil {
		for _, k := range keys {
			if _, ok := want[k]; !ok {
				ref := ""
				if st, ok := old[k]; ok {
					ref = st.Image
				}
				if err := a.rt.Unpin(ctx, k, ref); err != nil {
					a.log.Warn().Err(err).Str("function", k).Msg("release acceleration pin")
				} else {
					a.log.Info().Str("function", k).Msg("acceleration pin released")
				}
			}
		}
	} else {
		a.log.Warn().Err(err).Msg("list acceleration pins")
	}

	for name, ref := range want {
		round.Go(func(ctx context.Context) { a.accelerateOne(ctx, name, ref) })
	}
}

// accelerateOne pulls and pins one function's image, retrying failures
// until ctx ends.
func (a *accelerator) accelerateOne(ctx context.Context, fn, ref string) {
	log := a.log.With().Str("function", fn).Str("image", ref).Logger()
	for {
		t0 := a.now()
		pctx, cancel := context.WithTimeout(ctx, a.config().Worker.PullTimeout())
		img, err := a.rt.EnsureImage(pctx, ref)
		if err == nil {
			err = a.rt.Pin(pctx, fn, img)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		st := AccelState{Image: ref, Since: a.now().UTC().Format(time.RFC3339)}
		if err != nil {
			st.State, st.Error = "failed", err.Error()
			log.Warn().Err(err).Dur("retry_in", accelRetry).Msg("image acceleration failed")
		} else {
			st.State, st.Digest = "pinned", img.Digest
			log.Info().Str("digest", img.Digest).Dur("took", a.now().Sub(t0)).Msg("image accelerated: pulled, unpacked and pinned")
		}
		a.mu.Lock()
		a.state[fn] = st
		a.mu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(accelRetry):
		}
	}
}

// stopAccelerating cancels pulls in flight (pins stay: they are wanted
// across restarts).
func (a *accelerator) stop() {
	a.mu.Lock()
	round := a.round
	a.mu.Unlock()
	_ = round.Stop(context.Background())
}

// Acceleration reports each accelerated function's image state, by
// function name.
func (w *Worker) Acceleration() map[string]AccelState { return w.accel.states() }

func (a *accelerator) states() map[string]AccelState {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]AccelState, len(a.state))
	names := make([]string, 0, len(a.state))
	for k := range a.state {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		out[k] = a.state[k]
	}
	return out
}
