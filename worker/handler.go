package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
)

var _ asynq.Handler = (*Worker)(nil)

// ProcessTask schedules one attempt of an invocation and returns nil (the
// asynq ack) as soon as its container has started. Everything after that
// belongs to the attempt's supervisor, on the worker's lifetime.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodePayload(t)
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	a := w.newAttempt(p.RequestId, p.Attempt, p.Function)
	rec, err := w.records.Get(ctx, p.RequestId)
	switch {
	case errors.Is(err, record.ErrNotFound):
		a.log.Warn().Msg("no record for task (expired or deleted); dropping it")
		return nil
	case err != nil:
		return err
	case rec.Status.Terminal():
		a.log.Info().Str("status", string(rec.Status)).Msg("invocation already ended (terminated or redelivered); acknowledged")
		return nil
	case rec.Attempt != p.Attempt:
		a.log.Info().Int("record_attempt", rec.Attempt).Msg("task of an earlier attempt; acknowledged")
		return nil
	case rec.Status.Started():
		a.log.Info().Msg("already started; redelivery acknowledged")
		return nil
	}
	err = a.schedule(ctx, rec)
	if err != nil && !isWait(err) {
		a.log.Warn().Err(err).Msg("scheduling failed")
	}
	return err
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(record.TimeFormat, s)
	return t
}
