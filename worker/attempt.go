package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/worker/logdriver"
	"github.com/jobgate/jobgate/worker/runtime"
)

// attempt runs one attempt of an invocation from its start claim to its
// final status (Nomad's task runner): it creates the instance (or takes a
// warm one), starts it, supervises it (exit, timeout, terminate, disk,
// lease renewal), records the outcome, retries or dead-letters per
// policy.go, and removes the instance. A worker that finds the instance
// running after a restart builds an attempt from the container and enters
// at supervise; one that finds it ended enters at complete.
type attempt struct {
	w   *Worker
	log zerolog.Logger

	id      string // RequestId
	n       int    // attempt number (1-based)
	inst    string // instance id: log, claim and lease member of this attempt
	ctr     string // the containerd container id (a provisioned one differs from inst)
	fnName  string
	fn      *config.Function // nil when the function left the config (re-attach)
	memMB   int
	timeout time.Duration

	// Set once started (or re-attached).
	in    *runtime.Instance
	exitC <-chan runtime.ExitStatus
	// notBefore is a delayed invocation's time: the instance is started
	// then, not before.
	notBefore time.Time
	// eventFile is the host file holding an event too large for the
	// environment (large_events: file), mounted at jobenv.EventFilePath.
	eventFile string
	adm       *admission
	started   time.Time
	// startLogged: the log's START line is written (logStart).
	startLogged bool
	deadline    time.Time
	stopC       chan stopRequest // terminate requests from the control channel
}

// stopRequest asks a supervisor to end its instance: a user's terminate,
// or (fenced) the worker's own when it lost its lease.
type stopRequest struct {
	grace  bool
	fenced string // why, when the worker fences itself
}

func (w *Worker) newAttempt(id string, n int, fnName string) *attempt {
	a := &attempt{w: w, id: id, n: n, inst: record.InstanceID(id, n), fnName: fnName, stopC: make(chan stopRequest, 1)}
	a.ctr = a.inst
	if fn := w.config().Function(fnName); fn != nil {
		a.fn, a.memMB, a.timeout = fn, fn.MemoryMB, fn.Timeout()
	}
	a.log = w.log.With().Str("request_id", id).Str("function", fnName).Int("attempt", n).Logger()
	return a
}

// schedule is the task handler's part: claim, admit, start. It returns
// nil (the asynq ack) once the instance has started, a waiting or
// transient error for asynq to retry, or a SkipRetry failure.
func (a *attempt) schedule(ctx context.Context, rec *record.Record) error {
	w := a.w
	if a.fn == nil {
		return a.fail(ctx, &failure{code: record.CodeInternalError, permanent: true, err: fmt.Errorf("function %q is not in this worker's config", a.fnName)})
	}
	if err := expired(parseTime(rec.EnqueueTime), w.now(), a.fn.MaxEventAge(), rec); err != nil {
		var f *failure
		errors.As(err, &f)
		return a.fail(ctx, f)
	}
	// At most one start per attempt across hosts.
	mine, err := w.claims.take(ctx, a.inst)
	if err != nil {
		return err
	}
	if !mine {
		return errNotMine
	}
	// A container of ours with this id means an earlier delivery started
	// it before crashing: adopt it instead of starting another.
	if adopted, err := w.adopt(ctx, a.inst, a.fn.Provisioned > 0, a.log); err != nil || adopted {
		return err
	}
	if a.adm, err = w.admitter.admit(ctx, a.fn, a.inst); err == nil {
		err = w.records.Update(ctx, a.id, record.Update{Status: record.Scheduling, Node: &w.config().Worker.Node})
		if err == nil {
			err = a.start(ctx, rec)
		}
	}
	if err == nil {
		return nil
	}
	bctx := context.WithoutCancel(ctx)
	a.adm.release(bctx)
	action, code := decideStart(err)
	switch action {
	case startFail:
		var f *failure
		errors.As(err, &f)
		return a.fail(ctx, f)
	case startDropped:
		return nil
	case startWait:
		msg := "waiting: " + err.Error()
		_ = w.records.Update(ctx, a.id, record.Update{Status: record.Pending, StatusCode: &code, Message: &msg})
	default:
		msg := "retrying after: " + err.Error()
		if uerr := w.records.Update(bctx, a.id, record.Update{Status: record.Pending, Message: &msg}); uerr != nil {
			a.log.Warn().Err(uerr).Msg("record retry state")
		}
	}
	w.claims.drop(bctx, a.inst)
	a.removeEventFile()
	return err
}

// prepare ensures the image (pull per policy) and builds the instance's
// environment, checking SCF's limits: everything a start needs before
// containerd creates anything.
func (a *attempt) prepare(ctx context.Context, rec *record.Record) (*runtime.Image, []string, error) {
	w, fn, cfg := a.w, a.fn, a.w.config()
	event, err := w.records.Event(ctx, a.id)
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Worker.PullTimeout())
	pullStart := time.Now()
	img, err := w.rt.EnsureImage(pctx, fn.Image)
	cancel()
	if w.metrics != nil {
		w.metrics.ImagePullSeconds.WithLabelValues(fn.Name).Observe(time.Since(pullStart).Seconds())
		if err != nil && ctx.Err() == nil {
			w.metrics.ImagePullFailures.WithLabelValues(fn.Name).Inc()
		}
	}
	switch {
	case err != nil && runtime.IsPermanent(err):
		return nil, nil, permanent(record.CodePullImageFailed, err)
	case err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return nil, nil, permanent(record.CodePullImageTimeOut, fmt.Errorf("image pull exceeded pull_timeout_s (%s): %w", cfg.Worker.PullTimeout(), err))
	case err != nil:
		return nil, nil, err
	}
	b := jobenv.Builtins{
		FunctionName: fn.Name, Qualifier: rec.Qualifier, Region: cfg.Region, AppID: cfg.AppID, UIN: cfg.UIN,
		RequestID: a.id, Attempt: a.n,
	}
	env := jobenv.Build(img.Env, fn.Env, b, event)
	err = jobenv.CheckEnv(env)
	if err != nil && fn.EventsByFile() {
		// Too large for the environment: the job reads it from a file.
		if a.eventFile, err = writeEventFile(cfg.Worker.StateDir, a.inst, event); err != nil {
			return nil, nil, err
		}
		b.EventFile = jobenv.EventFilePath
		env = jobenv.Build(img.Env, fn.Env, b, jobenv.FileStub(len(event)))
		err = jobenv.CheckEnv(env)
	}
	if err != nil {
		return nil, nil, permanent(record.CodeEventTooLarge, err)
	}
	for _, arg := range append(append([]string{}, fn.Command...), fn.Args...) {
		if err := jobenv.CheckArg(arg); err != nil {
			return nil, nil, permanent(record.CodeContainerInitError, err)
		}
	}
	return img, env, nil
}

// labels are the instance's containerd labels: what a worker that
// re-attaches after a restart needs to know of it.
func (a *attempt) labels() map[string]string {
	return map[string]string{
		runtime.LabelRequestID: a.id, runtime.LabelFunction: a.fnName, runtime.LabelAttempt: strconv.Itoa(a.n),
		// The time limit counts from the start, which is not known yet:
		// the label allows a second for the create, so a job is never
		// stopped early, at worst a second late. Correcting it after the
		// start would cost a containerd metadata write per job.
		runtime.LabelDeadline: a.w.now().Add(a.timeout + time.Second).UTC().Format(time.RFC3339Nano),
		runtime.LabelNode:     a.w.config().Worker.Node,
	}
}

// start prepares, creates (or takes a warm instance) and starts, then
// hands the instance to its supervisor.
func (a *attempt) start(ctx context.Context, rec *record.Record) error {
	w, fn := a.w, a.fn
	t0 := w.now()
	img, env, err := a.prepare(ctx, rec)
	if err != nil {
		return err
	}
	tImage := w.now()
	labels := a.labels()
	// A warm instance was created without the event file's mount.
	if wm := a.takeWarm(img); wm != nil {
		err := a.waitDue(ctx)
		if err == nil {
			err = a.startWarm(ctx, wm, labels, env)
		}
		if err == nil {
			a.in, a.exitC, a.ctr = wm.in, wm.exitC, wm.in.ID
			a.running(ctx, rec, img, t0, tImage, tImage)
			return nil
		}
		if !errors.Is(err, errWarmUnusable) {
			return err
		}
		a.log.Info().Err(err).Msg("provisioned instance unusable; creating one")
	}
	in, err := w.rt.Create(ctx, runtime.Spec{
		ID: a.inst, Image: img, Command: fn.Command, Args: fn.Args, Env: env,
		MemoryMB: fn.MemoryMB, PidsLimit: pidsLimit, Network: fn.Network, Isolation: isolation(*fn, w.config()),
		Labels: labels, EventFile: a.eventFile,
	})
	if errors.Is(err, runtime.ErrInit) {
		return permanent(record.CodeContainerInitError, err)
	}
	if err != nil {
		return err
	}
	tCreate := w.now()
	cleanup := func() {
		if rerr := in.Remove(context.WithoutCancel(ctx)); rerr != nil {
			a.log.Warn().Err(rerr).Msg("remove instance after failed start")
		}
	}
	exitC, err := in.Wait(w.group.Context()) // before Start, or a fast exit is missed
	if err != nil {
		cleanup()
		return err
	}
	if err := a.waitDue(ctx); err != nil {
		cleanup()
		return err
	}
	// Last look before the point of no return: terminated meanwhile?
	if w.terminateRequested(ctx, a.id) {
		cleanup()
		a.log.Info().Msg("terminated while scheduling; not started")
		return errTerminated
	}
	if err := a.logStart(ctx); err != nil {
		cleanup()
		return err
	}
	// The start instant is taken before Start: a process may exit before
	// Start returns, and its exit time must not precede its start.
	a.started = w.now()
	if err := in.Start(ctx); err != nil {
		cleanup()
		if errors.Is(err, runtime.ErrInit) {
			return permanent(record.CodeContainerInitError, err)
		}
		return err // the platform's failure: retried, not the job's attempt
	}
	a.in, a.exitC = in, exitC
	a.running(ctx, rec, img, t0, tImage, tCreate)
	return nil
}

// logStart writes the log's START line, once: a provisioned instance that
// turned out unusable after it was written falls back to a fresh create,
// which must not write it again.
func (a *attempt) logStart(ctx context.Context) error {
	if a.startLogged {
		return nil
	}
	if err := a.w.logs.AppendPlatform(ctx, a.inst, false, "START RequestId:"+a.id); err != nil {
		return err
	}
	a.startLogged = true
	return nil
}

// errWarmUnusable: the provisioned instance taken could not be used (its
// stub died); it is removed and the event gets a fresh instance.
var errWarmUnusable = errors.New("provisioned instance unusable")

// startWarm gives a provisioned instance this attempt's identity and
// environment; its process then execs the function's command.
func (a *attempt) startWarm(ctx context.Context, wm *warm, labels map[string]string, env []string) error {
	w := a.w
	unusable := func(err error) error {
		w.pool.discard(wm)
		return fmt.Errorf("%w: %w", errWarmUnusable, err)
	}
	// Labels first: after a crash they tell reconcile whose it is (and,
	// while its stub still waits, that it never ran).
	labels[runtime.LabelInstance] = a.inst
	if err := wm.in.SetLabels(ctx, labels); err != nil {
		return unusable(err)
	}
	if w.terminateRequested(ctx, a.id) {
		w.pool.discard(wm)
		a.log.Info().Msg("terminated while scheduling; not started")
		return errTerminated
	}
	if err := a.logStart(ctx); err != nil {
		w.pool.discard(wm)
		return err
	}
	a.started = w.now() // before the command can run (see start)
	if err := wm.in.Release(ctx, a.inst, env); err != nil {
		return unusable(err)
	}
	return nil
}

// running hands the started instance to its supervisor and records it
// RUNNING.
func (a *attempt) running(ctx context.Context, rec *record.Record, img *runtime.Image, t0, tImage, tCreate time.Time) {
	w := a.w
	a.deadline = a.started.Add(a.timeout)
	a.supervise()
	w.demand.started(a.fnName, w.now())
	if w.config().Worker.Warm.Auto {
		w.pools.prompt() // the pool may need to grow
	}

	// Bookkeeping after Start must not be lost to a cancelled handler.
	// RUNNING first: it answers wait=scheduled callers, and it is what
	// keeps a redelivery from starting the attempt again.
	bctx := context.WithoutCancel(ctx)
	code := record.CodeRunning
	err := w.records.UpdateFrom(bctx, a.id, []record.Status{record.Scheduling, record.Pending}, record.Update{
		Status: record.Running, StatusCode: &code, StartTime: &a.started, ImageDigest: &img.Digest, Node: &w.config().Worker.Node,
	})
	if errors.Is(err, record.ErrStatus) {
		// Terminated in the instant before Start: honour it now.
		w.deliverStop(bctx, a.id)
	} else if err != nil {
		a.log.Warn().Err(err).Msg("record RUNNING")
	}
	if err := w.claims.keep(bctx, a.inst); err != nil {
		a.log.Warn().Err(err).Msg("persist start claim")
	}
	enqueued := parseTime(rec.EnqueueTime)
	if w.metrics != nil {
		w.metrics.ScheduleSeconds.WithLabelValues(a.fnName).Observe(a.started.Sub(enqueued).Seconds())
	}
	a.log.Info().Str("image", a.fn.Image).Str("digest", img.Digest).
		Dur("queued_ms", t0.Sub(enqueued)).Dur("image_ms", tImage.Sub(t0)).
		Dur("create_ms", tCreate.Sub(tImage)).Dur("start_ms", a.started.Sub(tCreate)).Bool("provisioned", a.ctr != a.inst).Msg("instance started")
}

// supervise runs watch on the worker's lifetime; it returns at once. An
// attempt already supervised here is left to its supervisor.
func (a *attempt) supervise() {
	w := a.w
	if !w.runners.add(a) {
		return
	}
	if w.metrics != nil {
		w.metrics.Running.Inc()
	}
	w.group.Go(func(ctx context.Context) {
		defer w.runners.remove(a.id)
		if w.metrics != nil {
			defer w.metrics.Running.Dec()
		}
		a.watch(ctx)
	})
	// A terminate requested while no worker watched (or just before).
	w.group.Go(func(ctx context.Context) { w.deliverStop(ctx, a.id) })
}

// requestStop passes a user's terminate to the supervisor.
func (a *attempt) requestStop(grace bool) {
	select {
	case a.stopC <- stopRequest{grace: grace}:
	default:
	}
}

// watch waits for the exit, stopping the instance at its deadline, on a
// terminate or past the disk limit, and renewing its concurrency lease.
// When the worker stops first, the instance keeps running: the next start
// re-attaches.
func (a *attempt) watch(ctx context.Context) {
	w := a.w
	cfg := w.config().Worker
	timer := time.NewTimer(time.Until(a.deadline))
	defer timer.Stop()
	disk := time.NewTicker(time.Duration(cfg.DiskPollMs) * time.Millisecond)
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
		a.stop(ctx, grace, exited, a.log.With().Str("reason", r).Logger())
	}
	var st runtime.ExitStatus
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			stopping(stopTimeout, fmt.Sprintf("execution time limit of %d s reached", int(a.timeout/time.Second)), true)
			continue
		case req := <-a.stopC:
			if req.fenced != "" {
				stopping(stopFenced, req.fenced, false)
				continue
			}
			stopping(stopTerminate, fmt.Sprintf("terminated by user (GraceShutdown=%t)", req.grace), req.grace)
			continue
		case <-disk.C:
			if reason != "" {
				continue
			}
			used, err := w.rt.WritableBytes(ctx, a.ctr)
			if err == nil && used > cfg.DiskLimitBytes() {
				stopping(stopDisk, fmt.Sprintf("DiskQuotaExceeded: the writable layer holds %d bytes, over the limit of %d", used, cfg.DiskLimitBytes()), false)
			}
			continue
		case <-lease.C:
			a.adm.renew(ctx)
			continue
		case st = <-a.exitC:
		}
		if st.Err == nil {
			break
		}
		// The wait broke (containerd restarted); the process may live on.
		a.log.Warn().Err(st.Err).Msg("wait interrupted; re-attaching")
		var err error
		a.exitC, err = w.rewait(ctx, a.ctr)
		if errors.Is(err, runtime.ErrNoTask) {
			// The task was deleted meanwhile (an earlier worker was
			// finishing it when it died): complete from the outcome label.
			if _, aerr := w.attach(context.WithoutCancel(ctx), a.ctr, a.log); aerr != nil {
				a.log.Error().Err(aerr).Msg("complete an instance whose task is gone")
			}
			return
		}
		if err != nil {
			a.log.Error().Err(err).Msg("cannot re-attach; leaving it to the next reconcile")
			return
		}
	}
	close(exited)
	exited = nil
	a.finish(st, reason, detail)
}

// stop ends the instance: with grace, SIGTERM to its main process, then
// SIGKILL to every process after stop_grace_s (a PID 1 without a handler
// ignores SIGTERM); without, SIGKILL to every process at once.
func (a *attempt) stop(life context.Context, grace bool, exited <-chan struct{}, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !grace {
		log.Info().Msg("stopping instance: SIGKILL")
		_ = a.in.Signal(ctx, syscall.SIGKILL, true)
		return
	}
	g := a.w.config().Worker.StopGrace()
	log.Info().Dur("grace", g).Msg("stopping instance: SIGTERM, then SIGKILL after the grace period")
	_ = a.in.Signal(ctx, syscall.SIGTERM, false)
	a.w.group.Go(func(context.Context) {
		select {
		case <-time.After(g):
			kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer kcancel()
			_ = a.in.Signal(kctx, syscall.SIGKILL, true)
		case <-exited:
		case <-life.Done():
		}
	})
}

// finish turns an exit into the attempt's outcome, keeps it on the
// container (a crash from here on completes from the label), deletes the
// task and completes. Its work is bounded and runs even if the worker is
// shutting down.
func (a *attempt) finish(st runtime.ExitStatus, reason, detail string) {
	w := a.w
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer a.adm.release(ctx)
	defer w.demand.ended(a.fnName, w.now())
	usage, err := a.in.Usage(ctx)
	if err != nil {
		a.log.Debug().Err(err).Msg("cgroup usage")
	}
	oom := w.ooms.take(a.ctr) || usage.OOMKills > 0
	end := st.ExitedAt
	if end.IsZero() {
		end = w.now()
	}
	o := outcomeOf(reason, detail, oom, int(st.Code), a.started, end, usage.PeakMemoryBytes, a.memMB)
	// Persist the outcome before the task (and its exit status) is gone.
	if b, err := json.Marshal(o); err == nil {
		if err := a.in.SetLabel(ctx, runtime.LabelOutcome, string(b)); err != nil {
			a.log.Warn().Err(err).Msg("outcome label")
		}
	}
	// Deleting the task closes the log pipes; the shim waits for the log
	// driver to flush, so the log is complete afterwards.
	if err := a.in.DeleteTask(ctx); err != nil {
		a.log.Warn().Err(err).Msg("delete task")
	}
	a.complete(ctx, o)
}

// complete writes the END/Report lines, records the outcome (or queues
// the next attempt, or dead-letters it, as decideExit says) and removes
// the instance. Redis may be away (restarting, cut off): each step is
// tried again until it lands, and the instance, labelled with its
// outcome, is removed only then; a worker stopped meanwhile leaves it for
// its next start to complete (reconcile).
func (a *attempt) complete(ctx context.Context, o outcome) {
	w := a.w
	w.metrics.Outcome(a.fnName, o.StatusCode) // before the record says it ended
	life := context.WithoutCancel(ctx)
	if w.group != nil {
		life = w.group.Context()
	}
	var s endSteps
	for try := 0; ; try++ {
		tctx, cancel := context.WithTimeout(life, 15*time.Second)
		err := a.recordEnd(tctx, o, &s)
		cancel()
		if err == nil {
			w.ends.add(a.id, recentEnd{attempt: a.n, started: a.started, o: o, at: w.now()})
			break
		}
		if try == 0 {
			a.log.Warn().Err(err).Msg("recording the end failed; retrying until Redis takes it")
		}
		select {
		case <-life.Done():
			a.log.Warn().Err(err).Msg("end not recorded before the worker stopped: its next start records it")
			return
		case <-time.After(min(time.Duration(try+1)*250*time.Millisecond, 5*time.Second)):
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute) // ctx may have run out while Redis was away
	defer cancel()
	if a.in == nil {
		// Ended from afar (its node was lost): no instance here.
	} else if err := a.in.Remove(rctx); err != nil {
		a.log.Warn().Err(err).Msg("remove instance")
	}
	a.removeEventFile()
	a.log.Info().Str("status", string(o.Status)).Int("status_code", o.StatusCode).Int("exit_code", o.ExitCode).
		Int64("duration_ms", o.DurationMs).Bool("retried", s.retried).Msg("instance ended")
}

// endSteps are the parts of recording an end already done, kept across
// tries so none is done twice.
type endSteps struct {
	logged, recorded, retried, deadLettered bool
	// ended: this attempt's status is the invocation's final one;
	// destined: its destinations are queued.
	ended, destined bool
}

// recordEnd does the steps of complete not yet done; an error means Redis
// did not take one and the rest waits for the next try.
func (a *attempt) recordEnd(ctx context.Context, o outcome, s *endSteps) error {
	w := a.w
	if !s.logged {
		// Lines the log driver spooled (Redis was away when the task was
		// deleted) go in before the end marker.
		w.spoolMu.Lock()
		_, err := logdriver.ReplayInstance(ctx, w.logs, logdriver.SpoolDir(w.config().Worker.StateDir), a.inst)
		w.spoolMu.Unlock()
		if err != nil {
			return err
		}
		var done bool
		// (Already written if a worker died between this and the record.)
		_, done, err = w.logs.Range(ctx, a.inst, 1<<62)
		if err != nil {
			return err
		}
		if !done {
			report := fmt.Sprintf("Report RequestId:%s Duration:%dms Memory:%dMB MemUsage:%.2fMB", a.id, o.DurationMs, o.MemoryMB, float64(o.PeakBytes)/(1<<20))
			if err := w.logs.AppendPlatform(ctx, a.inst, true, "END RequestId:"+a.id, report); err != nil {
				return err
			}
		}
		s.logged = true
	}
	if !s.recorded {
		rec, err := w.records.Get(ctx, a.id)
		switch {
		case errors.Is(err, record.ErrNotFound):
			s.recorded, s.deadLettered = true, true // past retention: nothing left to record
			return nil
		case err != nil:
			return err
		case rec.Attempt != a.n:
			s.retried = true // a later attempt owns the record (completed before a crash)
		default:
			var p *retryPolicy
			if fn := w.config().Function(a.fnName); fn != nil {
				p = &retryPolicy{max: fn.RetryMax(), delay: time.Duration(fn.Retry.DelayS) * time.Second, maxAge: fn.MaxEventAge()}
			}
			if next := decideExit(o, a.n, p, parseTime(rec.EnqueueTime), w.now()); next.retry {
				if s.retried, err = a.retry(ctx, rec, o, p, next.delay); err != nil {
					return err
				}
			}
		}
		if !s.retried {
			// Only a started attempt ends (SCHEDULING: it ended before the
			// handler recorded RUNNING); a final or re-queued record stays.
			u := record.Update{Status: o.Status, StatusCode: &o.StatusCode, Message: &o.Message, ExitCode: &o.ExitCode,
				EndTime: &o.EndTime, DurationMs: &o.DurationMs, MemUsageBytes: &o.PeakBytes}
			err := w.records.UpdateFrom(ctx, a.id, []record.Status{record.Running, record.Scheduling}, u)
			switch {
			case errors.Is(err, record.ErrStatus):
				// Ended meanwhile: by this attempt before a crash (the same
				// status: its later steps are still to do), or otherwise
				// (terminated): then not this attempt's to dead-letter.
				cur, gerr := w.records.Get(ctx, a.id)
				if gerr != nil && !errors.Is(gerr, record.ErrNotFound) {
					return gerr
				}
				if s.ended = cur != nil && cur.Attempt == a.n && cur.Status == o.Status; !s.ended {
					s.deadLettered, s.destined = true, true
				}
			case err != nil:
				return err
			default:
				s.ended = true
			}
		}
		s.recorded = true
	}
	if !s.deadLettered && !s.retried && o.Status == record.Failed {
		if err := w.deadLetter(ctx, a.id, o.StatusCode, o.Message); err != nil {
			return err
		}
	}
	s.deadLettered = true
	if !s.destined && s.ended && !s.retried {
		if err := w.queueDestinations(ctx, a.id, a.fnName, a.n, o.Status); err != nil {
			return err
		}
	}
	s.destined = true
	return nil
}

// retry records this attempt in the record's history, returns the record
// to PENDING as attempt n+1 and queues it delay later. It reports whether
// the record now belongs to the next attempt (false: it ended otherwise
// meanwhile, e.g. terminated); an error means Redis did not take it.
func (a *attempt) retry(ctx context.Context, rec *record.Record, o outcome, p *retryPolicy, delay time.Duration) (bool, error) {
	w := a.w
	this := rec.Summary()
	this.Status, this.StatusCode, this.ExitCode, this.Message = o.Status, o.StatusCode, &o.ExitCode, o.Message
	this.EndTime = o.EndTime.UTC().Format(record.TimeFormat)
	this.DurationMs, this.MemUsageBytes = o.DurationMs, o.PeakBytes
	next := a.n + 1
	msg := fmt.Sprintf("attempt %d failed (%s); attempt %d of %d in %s", a.n, o.Message, next, p.max+1, delay)
	err := w.records.UpdateFrom(ctx, a.id, []record.Status{record.Running, record.Scheduling}, record.Update{
		Status: record.Pending, StatusCode: record.Ptr(record.CodeRunning), Attempt: &next, Message: &msg,
		ClearRun: true, AppendAttempt: this,
	})
	switch {
	case errors.Is(err, record.ErrStatus):
		return false, nil
	case err != nil:
		return false, err
	}
	if err := w.submit.Requeue(ctx, a.id, a.fnName, next, delay); err != nil {
		// The record is PENDING as attempt n+1: the orphan sweeper queues
		// it within submit.orphan_s.
		a.log.Warn().Err(err).Msg("queue the next attempt: left to the orphan sweeper")
		return true, nil
	}
	if w.metrics != nil {
		w.metrics.Retries.WithLabelValues(a.fnName).Inc()
	}
	a.log.Info().Int("next_attempt", next).Dur("delay", delay).Msg("failed attempt will be retried")
	return true, nil
}

// fail records a permanent scheduling failure, dead-letters the event and
// tells asynq not to retry.
func (a *attempt) fail(ctx context.Context, f *failure) error {
	w := a.w
	ctx = context.WithoutCancel(ctx)
	now := w.now()
	msg := f.err.Error()
	err := w.records.Update(ctx, a.id, record.Update{Status: record.Failed, StatusCode: &f.code, Message: &msg, EndTime: &now})
	if errors.Is(err, record.ErrTerminal) {
		return fmt.Errorf("%w: %w", f, asynq.SkipRetry)
	}
	if err != nil {
		return err // Redis trouble: let asynq retry the whole thing
	}
	_ = w.logs.AppendPlatform(ctx, a.inst, true, fmt.Sprintf("ERROR RequestId:%s %s: %s", a.id, record.CodeName(f.code), msg))
	if err := w.deadLetter(ctx, a.id, f.code, msg); err != nil {
		a.log.Error().Err(err).Msg("dead-letter")
	}
	if err := w.queueDestinations(ctx, a.id, a.fnName, a.n, record.Failed); err != nil {
		a.log.Error().Err(err).Msg("queue destinations")
	}
	return fmt.Errorf("%w: %w", f, asynq.SkipRetry)
}

// takeWarm takes a provisioned instance for the attempt, unless its
// event is in a file (a warm instance has no mount for it).
func (a *attempt) takeWarm(img *runtime.Image) *warm {
	if a.eventFile != "" {
		return nil
	}
	return a.w.pool.take(a.fn.Name, img.Digest)
}

// eventFilePath is where an attempt's large event is kept on the host.
func eventFilePath(stateDir, inst string) string {
	return filepath.Join(stateDir, "events", inst+".json")
}

// writeEventFile stores an event for the instance to read (world-readable:
// the job may run as any user; the directory is the worker's own).
func writeEventFile(stateDir, inst string, event []byte) (string, error) {
	path := eventFilePath(stateDir, inst)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("event file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, event, 0o644); err != nil {
		return "", fmt.Errorf("event file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("event file: %w", err)
	}
	return path, nil
}

// removeEventFile deletes the attempt's event file, if it has one (a
// re-attached attempt does not know: its path is tried).
func (a *attempt) removeEventFile() {
	path := a.eventFile
	if path == "" {
		path = eventFilePath(a.w.config().Worker.StateDir, a.inst)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn().Err(err).Msg("remove event file")
	}
}

// waitDue waits until a delayed invocation's time (its instance is ready
// by then).
func (a *attempt) waitDue(ctx context.Context) error {
	wait := a.notBefore.Sub(a.w.now())
	if wait <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
	}
}
