package worker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/worker/runtime"
)

// sup is what a supervisor needs to know about its instance.
type sup struct {
	id       string
	function string
	deadline time.Time
	started  time.Time
	memoryMB int
	timeoutS int
}

// supervise watches in until it exits (or its deadline passes), then
// records the outcome and removes it. It returns at once.
func (w *Worker) supervise(in *runtime.Instance, exitC <-chan runtime.ExitStatus, s sup) {
	w.mu.Lock()
	if w.watching[s.id] {
		w.mu.Unlock()
		return
	}
	w.watching[s.id] = true
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { w.mu.Lock(); delete(w.watching, s.id); w.mu.Unlock() }()
		w.watch(in, exitC, s)
	}()
}

func (w *Worker) watch(in *runtime.Instance, exitC <-chan runtime.ExitStatus, s sup) {
	log := w.log.With().Str("request_id", s.id).Str("function", s.function).Logger()
	timer := time.NewTimer(time.Until(s.deadline))
	defer timer.Stop()
	timedOut := false
	var st runtime.ExitStatus
	for {
		select {
		case <-w.life.Done():
			// Worker stopping: the instance keeps running; reconcile
			// re-attaches on the next start.
			return
		case <-timer.C:
			timedOut = true
			w.stop(in, log)
			timer.Reset(time.Hour) // exitC fires soon after the kill
			continue
		case st = <-exitC:
		}
		if st.Err == nil {
			break
		}
		// The wait broke (containerd restarted); the process may live on.
		log.Warn().Err(st.Err).Msg("wait interrupted; re-attaching")
		var err error
		exitC, err = w.rewait(in.ID)
		if err != nil {
			log.Error().Err(err).Msg("cannot re-attach; leaving it to the next reconcile")
			return
		}
	}

	// Bounded bookkeeping after the exit: it must finish even if the
	// worker is shutting down.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	peak, err := in.PeakMemory(ctx)
	if err != nil {
		log.Debug().Err(err).Msg("peak memory")
	}
	// Deleting the task closes the log pipes; the shim waits for the log
	// driver to flush, so the log is complete afterwards.
	if err := in.DeleteTask(ctx); err != nil {
		log.Warn().Err(err).Msg("delete task")
	}
	end := st.ExitedAt
	if end.IsZero() {
		end = w.now()
	}
	dur := end.Sub(s.started).Milliseconds()
	exit := int(st.Code)
	u := record.Update{ExitCode: &exit, EndTime: &end, DurationMs: &dur, MemUsageBytes: &peak}
	switch {
	case timedOut:
		u.Status, u.StatusCode = record.Failed, record.Ptr(record.CodeTimeLimitReached)
		u.Message = record.Ptr(fmt.Sprintf("execution time limit of %d s reached", s.timeoutS))
	case exit == 0:
		u.Status, u.StatusCode, u.Message = record.Finished, record.Ptr(record.CodeOK), record.Ptr("")
	default:
		u.Status, u.StatusCode = record.Failed, record.Ptr(record.CodeUserProcessExited)
		u.Message = record.Ptr(fmt.Sprintf("process exited with code %d", exit))
	}
	report := fmt.Sprintf("Report RequestId:%s Duration:%dms Memory:%dMB MemUsage:%.2fMB", s.id, dur, s.memoryMB, float64(peak)/(1<<20))
	if err := w.logs.AppendPlatform(ctx, s.id, true, "END RequestId:"+s.id, report); err != nil {
		log.Warn().Err(err).Msg("write END/Report")
	}
	if err := w.records.Update(ctx, s.id, u); err != nil && !errors.Is(err, record.ErrTerminal) {
		log.Error().Err(err).Msg("record final status")
	}
	if err := in.Remove(ctx); err != nil {
		log.Warn().Err(err).Msg("remove instance")
	}
	log.Info().Str("status", string(u.Status)).Int("status_code", *u.StatusCode).Int("exit_code", exit).Int64("duration_ms", dur).Msg("instance ended")
}

// stop sends SIGTERM to the main process, then SIGKILL to every process
// once the grace period has passed (a PID 1 without a handler ignores
// SIGTERM).
func (w *Worker) stop(in *runtime.Instance, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.Info().Dur("grace", w.cfg.Worker.StopGrace()).Msg("time limit reached: SIGTERM, then SIGKILL after the grace period")
	_ = in.Signal(ctx, syscall.SIGTERM, false)
	grace := w.cfg.Worker.StopGrace()
	go func() {
		select {
		case <-time.After(grace):
			kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer kcancel()
			_ = in.Signal(kctx, syscall.SIGKILL, true)
		case <-w.life.Done():
		}
	}()
}

// rewait re-loads an instance after a broken wait.
func (w *Worker) rewait(id string) (<-chan runtime.ExitStatus, error) {
	var lastErr error
	for i := 0; i < 30; i++ {
		in, err := w.rt.Load(w.life, id)
		if err == nil {
			return in.Wait(w.life)
		}
		lastErr = err
		select {
		case <-w.life.Done():
			return nil, w.life.Err()
		case <-time.After(time.Second):
		}
	}
	return nil, lastErr
}
