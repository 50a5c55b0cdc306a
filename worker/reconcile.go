package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/worker/runtime"
)

// reconcile runs at start: every jobgate container in the namespace is
// either re-attached (its task exists: supervise it to the end, timeout
// re-armed from its deadline label) or removed (never started, or already
// recorded as ended).
func (w *Worker) reconcile(ctx context.Context) error {
	ids, err := w.rt.List(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		log := w.log.With().Str("request_id", id).Logger()
		if _, err := w.attach(ctx, id, log); err != nil {
			log.Warn().Err(err).Msg("reconcile instance")
		}
	}
	if len(ids) > 0 {
		w.log.Info().Int("containers", len(ids)).Msg("reconciled leftover instances")
	}
	return nil
}

// adopt is reconcile for one instance id, from the task handler: true
// when an instance with this id was already started here. With
// provisioned instances, its container may be a pooled one.
func (w *Worker) adopt(ctx context.Context, id string, provisioned bool, log zerolog.Logger) (bool, error) {
	ctrID := id
	if provisioned {
		if found, err := w.rt.FindInstance(ctx, id); err == nil && found != "" {
			ctrID = found
		}
	}
	adopted, err := w.attach(ctx, ctrID, log)
	if runtime.IsNotFound(err) {
		return false, nil
	}
	return adopted, err
}

// attach supervises an existing instance (by container id), or removes
// it if it has no task. It reports whether the instance is (now)
// supervised.
func (w *Worker) attach(ctx context.Context, ctrID string, log zerolog.Logger) (bool, error) {
	in, err := w.rt.Load(ctx, ctrID)
	inst, ctr := ctrID, ""
	if in != nil && in.Labels[runtime.LabelInstance] != "" && in.Labels[runtime.LabelInstance] != ctrID {
		inst, ctr = in.Labels[runtime.LabelInstance], ctrID // a provisioned instance
	}
	if errors.Is(err, runtime.ErrNoTask) {
		// Created but never started, or ended and mid-cleanup.
		id := in.Labels[runtime.LabelRequestID]
		attempt, _ := strconv.Atoi(in.Labels[runtime.LabelAttempt])
		var o outcome
		if raw := in.Labels[runtime.LabelOutcome]; raw != "" && json.Unmarshal([]byte(raw), &o) == nil {
			// It ended and its task was deleted just before a crash: the
			// outcome label carries what the exit status said.
			rec, gerr := w.records.Get(ctx, id)
			if gerr != nil {
				return false, gerr
			}
			started := parseTime(rec.StartTime)
			log.Info().Str("status", string(o.Status)).Msg("completing an instance that ended during a worker crash")
			w.complete(ctx, in, sup{id: id, inst: inst, ctr: ctr, function: rec.FunctionName, attempt: attempt, started: started, memoryMB: o.MemoryMB}, o, log)
			return false, nil
		}
		rec, gerr := w.records.Get(ctx, id)
		if gerr == nil && rec.Status == record.Running && rec.Attempt == attempt {
			msg := "instance lost: its task was gone when the worker restarted"
			now := w.now()
			if w.records.Update(ctx, id, record.Update{Status: record.Failed, StatusCode: record.Ptr(record.CodeInternalError), Message: &msg, EndTime: &now}) == nil {
				w.deadLetter(ctx, id, record.CodeInternalError, msg)
			}
		}
		log.Info().Msg("removing instance without a task")
		return false, in.Remove(ctx)
	}
	if err != nil {
		return false, err
	}
	if in.Waiting() {
		// A provisioned instance taken just before a crash, whose stub
		// never got its environment: it never ran. As below.
		log.Info().Msg("removing a provisioned instance that was never released")
		return false, in.Remove(ctx)
	}
	if started, err := in.Started(ctx); err == nil && !started {
		// Killed between create and Start: it never ran. Remove it; the
		// task's redelivery starts it afresh.
		log.Info().Msg("removing an instance that was created but never started")
		return false, in.Remove(ctx)
	}
	id := in.Labels[runtime.LabelRequestID]
	attempt, _ := strconv.Atoi(in.Labels[runtime.LabelAttempt])
	deadline, err := time.Parse(time.RFC3339Nano, in.Labels[runtime.LabelDeadline])
	if err != nil {
		deadline = w.now() // no usable deadline: stop it now rather than never
	}
	rec, err := w.records.Get(ctx, id)
	if err != nil {
		return false, fmt.Errorf("record of instance %s: %w", inst, err)
	}
	fn := w.config().Function(rec.FunctionName)
	memMB, timeoutS := 0, 0
	var adm *admission
	if fn != nil {
		memMB, timeoutS = fn.MemoryMB, fn.TimeoutS
		adm = w.readmit(ctx, fn, inst)
	}
	started := parseTime(rec.StartTime)
	if started.IsZero() {
		started = w.now()
	}
	exitC, err := in.Wait(w.life)
	if err != nil {
		adm.release(ctx)
		return false, err
	}
	if !rec.Status.Started() {
		code := record.CodeRunning
		_ = w.records.UpdateFrom(ctx, id, []record.Status{record.Pending, record.Scheduling}, record.Update{
			Status: record.Running, StatusCode: &code, StartTime: &started, Node: &w.config().Worker.Node})
	}
	log.Info().Int("attempt", attempt).Time("deadline", deadline).Msg("re-attached to running instance")
	w.supervise(in, exitC, sup{id: id, inst: inst, ctr: ctr, function: rec.FunctionName, attempt: attempt, deadline: deadline,
		started: started, memoryMB: memMB, timeoutS: timeoutS, adm: adm})
	return true, nil
}
