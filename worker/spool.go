package worker

import (
	"context"
	"time"

	"github.com/jobgate/jobgate/worker/logdriver"
)

// replayEvery is how often spooled log lines are retried.
const replayEvery = 10 * time.Second

// replayLogs puts the lines log drivers spooled to disk (Redis was down
// when their task was deleted) into the log store, at start and then
// every replayEvery until they land.
func (w *Worker) replayLogs(ctx context.Context) {
	dir := logdriver.SpoolDir(w.config().Worker.StateDir)
	t := time.NewTicker(replayEvery)
	defer t.Stop()
	for {
		w.spoolMu.Lock()
		n, err := logdriver.ReplaySpool(ctx, w.logs, dir)
		w.spoolMu.Unlock()
		if n > 0 {
			w.log.Info().Int("lines", n).Msg("replayed spooled log lines")
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn().Err(err).Msg("replay spooled log lines")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
