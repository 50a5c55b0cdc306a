package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
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

// attach takes over an existing container (by container id): a running
// task gets an attempt runner that supervises it; an ended one (outcome
// label) is completed; one that never ran is removed. It reports whether
// the instance is (now) supervised.
func (w *Worker) attach(ctx context.Context, ctrID string, log zerolog.Logger) (bool, error) {
	in, err := w.rt.Load(ctx, ctrID)
	if err != nil && !errors.Is(err, runtime.ErrNoTask) {
		return false, err
	}
	id := in.Labels[runtime.LabelRequestID]
	n, _ := strconv.Atoi(in.Labels[runtime.LabelAttempt])
	if errors.Is(err, runtime.ErrNoTask) {
		return false, w.attachEnded(ctx, in, id, n, log)
	}
	if in.Waiting() {
		// A provisioned instance taken just before a crash, whose stub
		// never got its environment: it never ran. As below.
		log.Info().Msg("removing a provisioned instance that was never released")
		return false, w.removeLeft(ctx, in, id, n)
	}
	if started, err := in.Started(ctx); err == nil && !started {
		// Killed between create and Start: it never ran. Remove it; the
		// task's redelivery starts it afresh.
		log.Info().Msg("removing an instance that was created but never started")
		return false, w.removeLeft(ctx, in, id, n)
	}
	rec, err := w.records.Get(ctx, id)
	if err != nil {
		return false, fmt.Errorf("record of instance %s: %w", ctrID, err)
	}
	if rec.Attempt != n || (rec.Status.Terminal() && rec.Attempt == n && rec.StatusCode == record.CodeNodeLost) {
		// The invocation moved on without it: this worker was presumed
		// lost (NodeLost) and the attempt retried elsewhere. It must not
		// run beside its retry.
		log.Warn().Int("attempt", n).Int("record_attempt", rec.Attempt).Msg("instance superseded while its worker was lost: killed and removed")
		return false, w.removeLeft(ctx, in, id, n)
	}
	a := w.adoptAttempt(in, rec.FunctionName, id, n)
	a.deadline, err = time.Parse(time.RFC3339Nano, in.Labels[runtime.LabelDeadline])
	if err != nil {
		a.deadline = w.now() // no usable deadline: stop it now rather than never
	}
	if a.started = parseTime(rec.StartTime); a.started.IsZero() {
		a.started = w.now()
	}
	if a.fn != nil {
		a.adm = w.admitter.readmit(ctx, a.fn, a.inst)
	}
	if a.exitC, err = in.Wait(w.group.Context()); err != nil {
		a.adm.release(ctx)
		return false, err
	}
	if !rec.Status.Started() {
		code := record.CodeRunning
		_ = w.records.UpdateFrom(ctx, id, []record.Status{record.Pending, record.Scheduling}, record.Update{
			Status: record.Running, StatusCode: &code, StartTime: &a.started, Node: &w.config().Worker.Node})
	}
	a.log.Info().Time("deadline", a.deadline).Msg("re-attached to running instance")
	a.supervise()
	return true, nil
}

// attachEnded handles a container without a task: created but never
// started, or ended and mid-cleanup when a worker died.
func (w *Worker) attachEnded(ctx context.Context, in *runtime.Instance, id string, n int, log zerolog.Logger) error {
	var o outcome
	if raw := in.Labels[runtime.LabelOutcome]; raw != "" && json.Unmarshal([]byte(raw), &o) == nil {
		// It ended and its task was deleted just before a crash: the
		// outcome label carries what the exit status said.
		rec, err := w.records.Get(ctx, id)
		if err != nil {
			return err
		}
		a := w.adoptAttempt(in, rec.FunctionName, id, n)
		a.started, a.memMB = parseTime(rec.StartTime), o.MemoryMB
		a.log.Info().Str("status", string(o.Status)).Msg("completing an instance that ended during a worker crash")
		a.complete(ctx, o)
		return nil
	}
	rec, err := w.records.Get(ctx, id)
	if err == nil && rec.Status == record.Running && rec.Attempt == n {
		msg := "instance lost: its task was gone when the worker restarted"
		now := w.now()
		if w.records.Update(ctx, id, record.Update{Status: record.Failed, StatusCode: record.Ptr(record.CodeInternalError), Message: &msg, EndTime: &now}) == nil {
			if err := w.deadLetter(ctx, id, record.CodeInternalError, msg); err != nil {
				log.Error().Err(err).Msg("dead-letter")
			}
			if err := w.queueDestinations(ctx, id, rec.FunctionName, n, record.Failed); err != nil {
				log.Error().Err(err).Msg("queue destinations")
			}
		}
	}
	log.Info().Msg("removing instance without a task")
	return w.removeLeft(ctx, in, id, n)
}

// removeLeft removes an instance a restarted worker will not run or
// complete, and the host file of its large event, if it had one (the
// attempt that wrote it is gone).
func (w *Worker) removeLeft(ctx context.Context, in *runtime.Instance, id string, n int) error {
	err := in.Remove(ctx)
	if id != "" && n > 0 {
		path := eventFilePath(w.config().Worker.StateDir, record.InstanceID(id, n))
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove event file: %w", rerr))
		}
	}
	return err
}

// adoptAttempt is the runner of an instance found in containerd; a
// provisioned one carries its instance id in a label.
func (w *Worker) adoptAttempt(in *runtime.Instance, fnName, id string, n int) *attempt {
	a := w.newAttempt(id, n, fnName)
	a.in, a.ctr, a.inst = in, in.ID, in.ID
	if inst := in.Labels[runtime.LabelInstance]; inst != "" {
		a.inst = inst
	}
	return a
}

// rewait re-loads an instance after a broken wait, for up to 30 s while
// containerd comes back.
func (w *Worker) rewait(ctx context.Context, id string) (<-chan runtime.ExitStatus, error) {
	var lastErr error
	for i := 0; i < 30; i++ {
		in, err := w.rt.Load(ctx, id)
		if err == nil {
			return in.Wait(ctx)
		}
		if errors.Is(err, runtime.ErrNoTask) || runtime.IsNotFound(err) {
			return nil, err
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil, lastErr
}
