package worker

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/jobgate/jobgate/internal/config"
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
	mu     sync.Mutex
	state  map[string]AccelState // function → state
	cancel context.CancelFunc    // stops the current round's pulls
	wg     sync.WaitGroup
}

// accelerate starts a round for cfg: every accelerated function's image is
// pulled (retrying until it succeeds) and pinned, and pins of functions
// no longer accelerated are released. A new round (config change) cancels
// the previous one's pulls first.
func (w *Worker) accelerate(ctx context.Context, cfg *config.Config) {
	a := &w.accel
	a.mu.Lock()
	if a.cancel != nil {
		a.cancel()
	}
	a.mu.Unlock()
	a.wg.Wait()

	ctx, cancel := context.WithCancel(ctx)
	want := map[string]string{}
	for _, fn := range cfg.Functions {
		if fn.Acceleration {
			want[fn.Name] = fn.Image
		}
	}
	a.mu.Lock()
	a.cancel = cancel
	old := a.state
	a.state = map[string]AccelState{}
	for name, img := range want {
		if st, ok := old[name]; ok && st.Image == img && st.State == "pinned" {
			a.state[name] = st // unchanged: re-checked below, shown as pinned meanwhile
			continue
		}
		a.state[name] = AccelState{Image: img, State: "pulling", Since: w.now().UTC().Format(time.RFC3339)}
	}
	a.mu.Unlock()

	// Release what is no longer wanted.
	if keys, err := w.rt.Pins(ctx); err == nil {
		for _, k := range keys {
			if _, ok := want[k]; !ok {
				ref := ""
				if st, ok := old[k]; ok {
					ref = st.Image
				}
				if err := w.rt.Unpin(ctx, k, ref); err != nil {
					w.log.Warn().Err(err).Str("function", k).Msg("release acceleration pin")
				} else {
					w.log.Info().Str("function", k).Msg("acceleration pin released")
				}
			}
		}
	} else {
		w.log.Warn().Err(err).Msg("list acceleration pins")
	}

	for name, ref := range want {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.accelerateOne(ctx, name, ref)
		}()
	}
}

// accelerateOne pulls and pins one function's image, retrying failures
// until ctx ends.
func (w *Worker) accelerateOne(ctx context.Context, fn, ref string) {
	log := w.log.With().Str("function", fn).Str("image", ref).Logger()
	for {
		t0 := w.now()
		pctx, cancel := context.WithTimeout(ctx, w.config().Worker.PullTimeout())
		img, err := w.rt.EnsureImage(pctx, ref)
		if err == nil {
			err = w.rt.Pin(pctx, fn, img)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		st := AccelState{Image: ref, Since: w.now().UTC().Format(time.RFC3339)}
		if err != nil {
			st.State, st.Error = "failed", err.Error()
			log.Warn().Err(err).Dur("retry_in", accelRetry).Msg("image acceleration failed")
		} else {
			st.State, st.Digest = "pinned", img.Digest
			log.Info().Str("digest", img.Digest).Dur("took", w.now().Sub(t0)).Msg("image accelerated: pulled, unpacked and pinned")
		}
		w.accel.mu.Lock()
		w.accel.state[fn] = st
		w.accel.mu.Unlock()
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
func (w *Worker) stopAccelerating() {
	w.accel.mu.Lock()
	if w.accel.cancel != nil {
		w.accel.cancel()
	}
	w.accel.mu.Unlock()
	w.accel.wg.Wait()
}

// Acceleration reports each accelerated function's image state, by
// function name.
func (w *Worker) Acceleration() map[string]AccelState {
	w.accel.mu.Lock()
	defer w.accel.mu.Unlock()
	out := make(map[string]AccelState, len(w.accel.state))
	names := make([]string, 0, len(w.accel.state))
	for k := range w.accel.state {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		out[k] = w.accel.state[k]
	}
	return out
}
