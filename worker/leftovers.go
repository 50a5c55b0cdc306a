package worker

import (
	"context"
	"time"

	"github.com/jobgate/jobgate/worker/runtime"
)

// leftoverEvery is how often the namespace is scanned for leftover
// processes. One is ended when two scans in a row report it, so a
// create in progress (its process briefly exists before its task) is
// never mistaken for one.
const leftoverEvery = 15 * time.Second

// endLeftovers ends shims and container processes that a crash left with
// no task: each holds memory (a shim ~11 MiB) and, for a create cut short,
// a `runc init` forever. It scans at start and every leftoverEvery.
func (w *Worker) endLeftovers(ctx context.Context) {
	seen := map[string]bool{}
	t := time.NewTicker(leftoverEvery)
	defer t.Stop()
	for {
		found, err := w.rt.Leftovers(ctx)
		if err != nil {
			w.log.Warn().Err(err).Msg("scan for leftover processes")
		}
		next := map[string]bool{}
		for _, l := range found {
			if !seen[l.Key()] {
				next[l.Key()] = true
				continue
			}
			if err := runtime.EndLeftover(l); err != nil {
				w.log.Warn().Err(err).Msg("end leftover process")
				continue
			}
			w.log.Info().Str("kind", l.Kind).Int("pid", l.Pid).Str("container", l.ID).Msg("ended a leftover process (its task is gone)")
		}
		seen = next
		w.sweepNetworks(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
