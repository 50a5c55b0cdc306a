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
	id, _ := asynq.GetTaskID(ctx)
	p, err := queue.Decode(id, t)
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if !w.inflight.enterFirst(p.RequestId) {
		return errBeingScheduled // retried shortly: by then it has started, or failed and is PENDING
	}
	defer w.inflight.leave(p.RequestId)
	rec, err := w.records.Get(ctx, p.RequestId)
	if p.Function == "" && err == nil {
		p.Function = rec.FunctionName // a first attempt's task names none
	}
	a := w.newAttempt(p.RequestId, p.Attempt, p.Function)
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
	case rec.Status == record.Scheduled:
		if rec, err = w.due(ctx, rec); err != nil || rec == nil {
			return err
		}
	}
	// A delayed invocation arrives 3–4 s early: its instance is
	// made ready meanwhile and started at its time.
	a.notBefore = parseTime(rec.ScheduledTime)
	err = a.schedule(ctx, rec)
	if err != nil && !isWait(err) {
		a.log.Warn().Err(err).Msg("scheduling failed")
	}
	return err
}

// due turns a delayed invocation PENDING when asynq hands its task over
// (its scheduled score: 3 s before its time). nil: it
// was terminated meanwhile.
func (w *Worker) due(ctx context.Context, rec *record.Record) (*record.Record, error) {
	err := w.records.UpdateFrom(ctx, rec.RequestId, []record.Status{record.Scheduled}, record.Update{Status: record.Pending})
	if errors.Is(err, record.ErrStatus) {
		cur, gerr := w.records.Get(ctx, rec.RequestId)
		if gerr != nil {
			return nil, gerr
		}
		if cur.Status.Terminal() {
			return nil, nil // terminated while it waited: acknowledged
		}
		return cur, nil
	}
	if err != nil {
		return nil, err
	}
	rec.Status = record.Pending
	return rec, nil
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(record.TimeFormat, s)
	return t
}
