package worker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"encoding/json"

	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/worker/runtime"
)

// sup is what a supervisor needs to know about its instance.
type sup struct {
	id       string // RequestId
	inst     string // instance (log, claim) id of this attempt
	ctr      string // its container id when it differs (a provisioned instance)
	function string
	attempt  int
	deadline time.Time
	started  time.Time
	memoryMB int
	timeoutS int
	adm      *admission
}

// container is the instance's containerd container id.
func (s sup) container() string {
	if s.ctr != "" {
		return s.ctr
	}
	return s.inst
}

// Why a supervisor stopped its instance.
const (
	stopTimeout   = "timeout"
	stopTerminate = "terminate"
	stopDisk      = "disk"
)

// supervise watches in until it exits, then records the outcome and
// removes it. It returns at once.
func (w *Worker) supervise(in *runtime.Instance, exitC <-chan runtime.ExitStatus, s sup) {
	stopC := make(chan stopRequest, 1)
	w.mu.Lock()
	if w.watching[s.id] != nil {
		w.mu.Unlock()
		return
	}
	w.watching[s.id] = stopC
	w.mu.Unlock()
	if w.metrics != nil {
		w.metrics.Running.Inc()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { w.mu.Lock(); delete(w.watching, s.id); w.mu.Unlock() }()
		if w.metrics != nil {
			defer w.metrics.Running.Dec()
		}
		w.watch(in, exitC, stopC, s)
	}()
	// A terminate requested while no worker watched (or just before).
	go w.deliverStop(w.life, s.id)
}

func (w *Worker) watch(in *runtime.Instance, exitC <-chan runtime.ExitStatus, stopC <-chan stopRequest, s sup) {
	log := w.log.With().Str("request_id", s.id).Str("function", s.function).Int("attempt", s.attempt).Logger()
	timer := time.NewTimer(time.Until(s.deadline))
	defer timer.Stop()
	disk := time.NewTicker(time.Duration(w.config().Worker.DiskPollMs) * time.Millisecond)
	defer disk.Stop()
	lease := time.NewTicker(leaseRenew)
	defer lease.Stop()
	reason, detail := "", ""
	exited := make(chan struct{}) // ends a pending SIGKILL escalation
	defer func() {
		if exited != nil {
			close(exited)
		}
	}()
	stopping := func(r, d string, grace bool) {
		if reason != "" {
			return
		}
		reason, detail = r, d
		w.stop(in, grace, exited, log.With().Str("reason", r).Logger())
	}
	var st runtime.ExitStatus
	for {
		select {
		case <-w.life.Done():
			// Worker stopping: the instance keeps running; reconcile
			// re-attaches on the next start.
			return
		case <-timer.C:
			stopping(stopTimeout, fmt.Sprintf("execution time limit of %d s reached", s.timeoutS), true)
			continue
		case req := <-stopC:
			stopping(stopTerminate, fmt.Sprintf("terminated by user (GraceShutdown=%t)", req.grace), req.grace)
			continue
		case <-disk.C:
			if reason != "" {
				continue
			}
			used, err := w.rt.WritableBytes(w.life, s.container())
			if err == nil && used > w.config().Worker.DiskLimitBytes() {
				stopping(stopDisk, fmt.Sprintf("DiskQuotaExceeded: the writable layer holds %d bytes, over the limit of %d", used, w.config().Worker.DiskLimitBytes()), false)
			}
			continue
		case <-lease.C:
			s.adm.renew(w.life)
			continue
		case st = <-exitC:
		}
		if st.Err == nil {
			break
		}
		// The wait broke (containerd restarted); the process may live on.
		log.Warn().Err(st.Err).Msg("wait interrupted; re-attaching")
		var err error
		exitC, err = w.rewait(s.container())
		if errors.Is(err, runtime.ErrNoTask) {
			// The task was deleted meanwhile (an earlier worker was
			// finishing it when it died): complete from the outcome label.
			if _, aerr := w.attach(context.WithoutCancel(w.life), s.container(), log); aerr != nil {
				log.Error().Err(aerr).Msg("complete an instance whose task is gone")
			}
			return
		}
		if err != nil {
			log.Error().Err(err).Msg("cannot re-attach; leaving it to the next reconcile")
			return
		}
	}
	close(exited)
	exited = nil
	w.finish(in, st, s, reason, detail, log)
}

// finish records the outcome of an exited instance, retries or
// dead-letters it, and removes it. Its work is bounded and runs even if
// the worker is shutting down.
func (w *Worker) finish(in *runtime.Instance, st runtime.ExitStatus, s sup, reason, detail string, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer s.adm.release(ctx)
	usage, err := in.Usage(ctx)
	if err != nil {
		log.Debug().Err(err).Msg("cgroup usage")
	}
	oom := w.takeOOM(s.container()) || usage.OOMKills > 0
	end := st.ExitedAt
	if end.IsZero() {
		end = w.now()
	}
	o := outcomeOf(s, reason, detail, oom, int(st.Code), end, usage.PeakMemoryBytes)
	// Persist the outcome before the task (and its exit status) is gone.
	if b, err := json.Marshal(o); err == nil {
		if err := in.SetLabel(ctx, runtime.LabelOutcome, string(b)); err != nil {
			log.Warn().Err(err).Msg("outcome label")
		}
	}
	// Deleting the task closes the log pipes; the shim waits for the log
	// driver to flush, so the log is complete afterwards.
	if err := in.DeleteTask(ctx); err != nil {
		log.Warn().Err(err).Msg("delete task")
	}
	w.complete(ctx, in, s, o, log)
}

// outcome is how an attempt ended, as recorded.
type outcome struct {
	Status     record.Status
	StatusCode int
	Message    string
	ExitCode   int
	EndTime    time.Time
	DurationMs int64
	PeakBytes  int64
	MemoryMB   int
}

func outcomeOf(s sup, reason, detail string, oom bool, exit int, end time.Time, peak int64) outcome {
	o := outcome{ExitCode: exit, EndTime: end, DurationMs: end.Sub(s.started).Milliseconds(), PeakBytes: peak, MemoryMB: s.memoryMB}
	switch {
	case reason == stopTerminate:
		o.Status, o.StatusCode, o.Message = record.Aborted, record.CodeRequestCanceled, detail
	case reason == stopTimeout:
		o.Status, o.StatusCode, o.Message = record.Failed, record.CodeTimeLimitReached, detail
	case reason == stopDisk:
		o.Status, o.StatusCode, o.Message = record.Failed, record.CodeDiskQuotaExceeded, detail
	case oom:
		o.Status, o.StatusCode = record.Failed, record.CodeMemoryLimitReached
		o.Message = fmt.Sprintf("memory limit of %d MB reached: the kernel OOM-killed a process (exit code %d)", s.memoryMB, exit)
	case exit == 0:
		o.Status, o.StatusCode = record.Finished, record.CodeOK
	default:
		o.Status, o.StatusCode = record.Failed, record.CodeUserProcessExited
		o.Message = fmt.Sprintf("process exited with code %d", exit)
	}
	return o
}

// complete writes the END/Report lines, records the outcome (or queues a
// retry, or dead-letters it) and removes the instance. A worker that
// restarts after the task was deleted calls it from the outcome label.
func (w *Worker) complete(ctx context.Context, in *runtime.Instance, s sup, o outcome, log zerolog.Logger) {
	u := record.Update{Status: o.Status, StatusCode: &o.StatusCode, Message: &o.Message, ExitCode: &o.ExitCode,
		EndTime: &o.EndTime, DurationMs: &o.DurationMs, MemUsageBytes: &o.PeakBytes}
	dur, exit := o.DurationMs, o.ExitCode
	report := fmt.Sprintf("Report RequestId:%s Duration:%dms Memory:%dMB MemUsage:%.2fMB", s.id, dur, o.MemoryMB, float64(o.PeakBytes)/(1<<20))
	// (Already written if a worker died between this and the record.)
	if _, done, _ := w.logs.Range(ctx, s.inst, 1<<62); !done {
		if err := w.logs.AppendPlatform(ctx, s.inst, true, "END RequestId:"+s.id, report); err != nil {
			log.Warn().Err(err).Msg("write END/Report")
		}
	}
	w.metrics.Outcome(s.function, *u.StatusCode) // before the record says it ended
	retried := false
	if rec, err := w.records.Get(ctx, s.id); err == nil && rec.Attempt != s.attempt {
		retried = true // a later attempt owns the record (completed before a crash)
	} else if u.Status == record.Failed && *u.StatusCode != record.CodeDiskQuotaExceeded {
		retried = w.retry(ctx, s, u, log)
	}
	if !retried {
		// Only a started attempt ends (SCHEDULING: it ended before the
		// handler recorded RUNNING); a final or re-queued record stays.
		err := w.records.UpdateFrom(ctx, s.id, []record.Status{record.Running, record.Scheduling}, u)
		switch {
		case err == nil && u.Status == record.Failed:
			w.deadLetter(ctx, s.id, *u.StatusCode, *u.Message)
		case err != nil && !errors.Is(err, record.ErrStatus):
			log.Error().Err(err).Msg("record final status")
		}
	}
	if err := in.Remove(ctx); err != nil {
		log.Warn().Err(err).Msg("remove instance")
	}
	log.Info().Str("status", string(u.Status)).Int("status_code", *u.StatusCode).Int("exit_code", exit).
		Int64("duration_ms", dur).Bool("retried", retried).Msg("instance ended")
}

// retry re-runs a failed exit (439, 433, 434) as the next attempt of the
// same RequestId, retry.delay_s later, while retry.max and the event's
// age allow. It reports whether a retry was queued.
func (w *Worker) retry(ctx context.Context, s sup, u record.Update, log zerolog.Logger) bool {
	fn := w.config().Function(s.function)
	if fn == nil || s.attempt > fn.RetryMax() {
		return false
	}
	rec, err := w.records.Get(ctx, s.id)
	if err != nil {
		return false
	}
	delay := time.Duration(fn.Retry.DelayS) * time.Second
	if w.now().Add(delay).Sub(parseTime(rec.EnqueueTime)) > fn.MaxEventAge() {
		return false // the next attempt would start too late
	}
	this := rec.Summary()
	this.Status, this.StatusCode, this.ExitCode, this.Message = u.Status, *u.StatusCode, u.ExitCode, *u.Message
	this.EndTime = u.EndTime.UTC().Format(record.TimeFormat)
	this.DurationMs, this.MemUsageBytes = *u.DurationMs, *u.MemUsageBytes
	next := s.attempt + 1
	msg := fmt.Sprintf("attempt %d failed (%s); attempt %d of %d in %s", s.attempt, *u.Message, next, fn.RetryMax()+1, delay)
	err = w.records.UpdateFrom(ctx, s.id, []record.Status{record.Running, record.Scheduling}, record.Update{
		Status: record.Pending, StatusCode: record.Ptr(record.CodeRunning), Attempt: &next, Message: &msg,
		ClearRun: true, AppendAttempt: this,
	})
	if err != nil {
		return false // terminated meanwhile, or Redis trouble: record it as final instead
	}
	if err := w.submit.Requeue(ctx, s.id, s.function, next, delay); err != nil {
		log.Error().Err(err).Msg("queue the next attempt")
		_ = w.records.UpdateFrom(ctx, s.id, []record.Status{record.Pending}, record.Update{
			Status: u.Status, StatusCode: u.StatusCode, Message: record.Ptr(*u.Message + "; the retry could not be queued: " + err.Error()),
		})
		w.deadLetter(ctx, s.id, *u.StatusCode, *u.Message)
		return true
	}
	log.Info().Int("next_attempt", next).Dur("delay", delay).Msg("failed attempt will be retried")
	return true
}

// deadLetter keeps the event of a failed invocation in the dead-letter
// list (SCF's DLQ message).
func (w *Worker) deadLetter(ctx context.Context, id string, code int, msg string) {
	rec, err := w.records.Get(ctx, id)
	if err != nil {
		w.log.Error().Err(err).Str("request_id", id).Msg("dead-letter: read record")
		return
	}
	event, err := w.records.Event(ctx, id)
	if err != nil {
		w.log.Error().Err(err).Str("request_id", id).Msg("dead-letter: read event")
		return
	}
	err = w.dlq.Add(ctx, deadletter.Entry{
		RequestId: id, ErrorCode: code, ErrorMessage: msg, Attempt: rec.Attempt,
		Body: deadletter.Body{
			FunctionName: rec.FunctionName, Namespace: rec.Namespace, Qualifier: rec.Qualifier,
			RequestSource: rec.RequestSource, ClientContext: string(event), PushTime: rec.EnqueueTime, RetryNum: rec.Attempt - 1,
		},
	})
	if err != nil {
		w.log.Error().Err(err).Str("request_id", id).Msg("dead-letter")
	}
}

// stop ends an instance: with grace, SIGTERM to its main process, then
// SIGKILL to every process after stop_grace_s (a PID 1 without a handler
// ignores SIGTERM); without, SIGKILL to every process at once.
func (w *Worker) stop(in *runtime.Instance, grace bool, exited <-chan struct{}, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !grace {
		log.Info().Msg("stopping instance: SIGKILL")
		_ = in.Signal(ctx, syscall.SIGKILL, true)
		return
	}
	g := w.config().Worker.StopGrace()
	log.Info().Dur("grace", g).Msg("stopping instance: SIGTERM, then SIGKILL after the grace period")
	_ = in.Signal(ctx, syscall.SIGTERM, false)
	go func() {
		select {
		case <-time.After(g):
			kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer kcancel()
			_ = in.Signal(kctx, syscall.SIGKILL, true)
		case <-exited:
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
		if errors.Is(err, runtime.ErrNoTask) || runtime.IsNotFound(err) {
			return nil, err
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
