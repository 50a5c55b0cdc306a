package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/worker/runtime"
)

var _ asynq.Handler = (*Worker)(nil)

// ProcessTask schedules one attempt of an invocation and returns nil (the
// asynq ack) as soon as its container has started. Everything after that
// belongs to the supervisor, on the worker's lifetime context.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := queue.DecodePayload(t)
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := w.log.With().Str("request_id", p.RequestId).Str("function", p.Function).Int("attempt", p.Attempt).Logger()
	err = w.schedule(ctx, p, log)
	if err != nil && !isWait(err) {
		log.Warn().Err(err).Msg("scheduling failed")
	}
	return err
}

// failure is a scheduling error with its SCF code and whether a retry
// could help.
type failure struct {
	code      int
	permanent bool
	err       error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func permanent(code int, err error) error { return &failure{code: code, permanent: true, err: err} }

func (w *Worker) schedule(ctx context.Context, p queue.Payload, log zerolog.Logger) error {
	rec, err := w.records.Get(ctx, p.RequestId)
	if errors.Is(err, record.ErrNotFound) {
		log.Warn().Msg("no record for task (expired or deleted); dropping it")
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case rec.Status.Terminal():
		log.Info().Str("status", string(rec.Status)).Msg("invocation already ended (terminated or redelivered); acknowledged")
		return nil
	case rec.Attempt != p.Attempt:
		log.Info().Int("record_attempt", rec.Attempt).Msg("task of an earlier attempt; acknowledged")
		return nil
	case rec.Status.Started():
		log.Info().Msg("already started; redelivery acknowledged")
		return nil
	}
	fn := w.config().Function(p.Function)
	if fn == nil {
		return w.fail(ctx, rec, &failure{code: record.CodeInternalError, permanent: true, err: fmt.Errorf("function %q is not in this worker's config", p.Function)})
	}
	// SCF's MsgTTL: an event too old is not started, whatever kept it.
	if age := w.now().Sub(parseTime(rec.EnqueueTime)); age > fn.MaxEventAge() {
		why := "event expired: queued " + age.Round(time.Second).String() + " ago, over max_event_age_s=" + strconv.Itoa(fn.MaxEventAgeS)
		if rec.Message != "" {
			why += "; last: " + rec.Message
		}
		code := record.CodeInternalError
		if rec.StatusCode != record.CodeRunning && rec.StatusCode != 0 {
			code = rec.StatusCode
		}
		return w.fail(ctx, rec, &failure{code: code, permanent: true, err: errors.New(why)})
	}
	inst := record.InstanceID(rec.RequestId, rec.Attempt)

	// At most one start per attempt across hosts.
	mine, err := w.claim(ctx, inst)
	if err != nil {
		return err
	}
	if !mine {
		return errNotMine
	}
	// A container of ours with this id means an earlier delivery started
	// it before crashing: adopt it instead of starting another.
	if adopted, err := w.adopt(ctx, inst, fn.Provisioned > 0, log); err != nil || adopted {
		return err
	}
	adm, err := w.admit(ctx, fn, inst)
	if err != nil {
		if isWait(err) {
			code := record.CodeRunning
			if errors.Is(err, errOverLimit) {
				code = record.CodeConcurrencyLimit
			}
			msg := "waiting: " + err.Error()
			_ = w.records.Update(ctx, rec.RequestId, record.Update{Status: record.Pending, StatusCode: &code, Message: &msg})
			w.unclaim(context.WithoutCancel(ctx), inst)
		}
		return err
	}
	if err := w.records.Update(ctx, rec.RequestId, record.Update{Status: record.Scheduling, Node: &w.config().Worker.Node}); err != nil {
		adm.release(context.WithoutCancel(ctx))
		return err
	}
	err = w.start(ctx, rec, fn, inst, adm, log)
	if err == nil {
		return nil
	}
	adm.release(context.WithoutCancel(ctx))
	var f *failure
	if errors.As(err, &f) && f.permanent {
		return w.fail(ctx, rec, f)
	}
	if errors.Is(err, errTerminated) {
		return nil
	}
	// Transient: back to PENDING with the reason; asynq retries.
	msg := "retrying after: " + err.Error()
	if uerr := w.records.Update(context.WithoutCancel(ctx), rec.RequestId, record.Update{Status: record.Pending, Message: &msg}); uerr != nil {
		log.Warn().Err(uerr).Msg("record retry state")
	}
	w.unclaim(context.WithoutCancel(ctx), inst)
	return err
}

// errTerminated: a user terminated the invocation while it was being
// scheduled; it was not started.
var errTerminated = errors.New("terminated before start")

// start pulls, creates and starts the instance, then hands it to a
// supervisor.
func (w *Worker) start(ctx context.Context, rec *record.Record, fn *config.Function, inst string, adm *admission, log zerolog.Logger) error {
	event, err := w.records.Event(ctx, rec.RequestId)
	if err != nil {
		return err
	}
	t0 := w.now()
	pctx, cancel := context.WithTimeout(ctx, w.config().Worker.PullTimeout())
	img, err := w.rt.EnsureImage(pctx, fn.Image)
	cancel()
	switch {
	case err != nil && runtime.IsPermanent(err):
		return permanent(record.CodePullImageFailed, err)
	case err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return permanent(record.CodePullImageTimeOut, fmt.Errorf("image pull exceeded pull_timeout_s (%s): %w", w.config().Worker.PullTimeout(), err))
	case err != nil:
		return err
	}

	env := jobenv.Build(img.Env, fn.Env, jobenv.Builtins{
		FunctionName: fn.Name, Qualifier: rec.Qualifier, Region: w.config().Region, AppID: w.config().AppID, UIN: w.config().UIN,
		RequestID: rec.RequestId, Attempt: rec.Attempt,
	}, event)
	if err := jobenv.CheckEnv(env); err != nil {
		return permanent(record.CodeEventTooLarge, err)
	}
	for _, a := range append(append([]string{}, fn.Command...), fn.Args...) {
		if err := jobenv.CheckArg(a); err != nil {
			return permanent(record.CodeContainerInitError, err)
		}
	}
	tImage := w.now()
	labels := map[string]string{
		runtime.LabelRequestID: rec.RequestId, runtime.LabelFunction: fn.Name,
		// The time limit counts from the start, which is not known yet:
		// the label (used only by a worker that re-attaches after a
		// restart) allows a second for the create, so a job is never
		// stopped early, at worst a second late. Correcting it after the
		// start would cost a containerd metadata write per job.
		runtime.LabelAttempt: strconv.Itoa(rec.Attempt), runtime.LabelDeadline: w.now().Add(fn.Timeout() + time.Second).UTC().Format(time.RFC3339Nano),
		runtime.LabelNode: w.config().Worker.Node,
	}
	if wm := w.takeWarm(fn.Name, img.Digest); wm != nil {
		err := w.startWarm(ctx, rec, inst, wm, labels, env, log)
		if err == nil {
			w.running(ctx, wm.in, wm.exitC, rec, fn, inst, wm.in.ID, adm, img, log, t0, tImage, tImage)
			return nil
		}
		if !errors.Is(err, errWarmUnusable) {
			return err
		}
		log.Info().Err(err).Msg("provisioned instance unusable; creating one")
	}
	in, err := w.rt.Create(ctx, runtime.Spec{
		ID: inst, Image: img, Command: fn.Command, Args: fn.Args, Env: env,
		MemoryMB: fn.MemoryMB, PidsLimit: pidsLimit, HostNetwork: fn.Network == "host",
		Labels: labels,
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
			log.Warn().Err(rerr).Msg("remove instance after failed start")
		}
	}
	exitC, err := in.Wait(w.life) // before Start, or a fast exit is missed
	if err != nil {
		cleanup()
		return err
	}
	// Last look before the point of no return: terminated meanwhile?
	if w.terminateRequested(ctx, rec.RequestId) {
		cleanup()
		log.Info().Msg("terminated while scheduling; not started")
		return errTerminated
	}
	if err := w.logs.AppendPlatform(ctx, inst, false, "START RequestId:"+rec.RequestId); err != nil {
		cleanup()
		return err
	}
	if err := in.Start(ctx); err != nil {
		cleanup()
		return permanent(record.CodeContainerInitError, err)
	}
	w.running(ctx, in, exitC, rec, fn, inst, "", adm, img, log, t0, tImage, tCreate)
	return nil
}

// errWarmUnusable: the provisioned instance taken could not be used (its
// stub died); it is removed and the event gets a fresh instance.
var errWarmUnusable = errors.New("provisioned instance unusable")

// startWarm gives a provisioned instance this attempt's identity and
// environment; its process then execs the function's command.
func (w *Worker) startWarm(ctx context.Context, rec *record.Record, inst string, wm *warm, labels map[string]string, env []string, log zerolog.Logger) error {
	unusable := func(err error) error {
		w.discard(wm)
		return fmt.Errorf("%w: %w", errWarmUnusable, err)
	}
	// Labels first: after a crash they tell reconcile whose it is (and,
	// while its stub still waits, that it never ran).
	labels[runtime.LabelInstance] = inst
	if err := wm.in.SetLabels(ctx, labels); err != nil {
		return unusable(err)
	}
	if w.terminateRequested(ctx, rec.RequestId) {
		w.discard(wm)
		log.Info().Msg("terminated while scheduling; not started")
		return errTerminated
	}
	if err := w.logs.AppendPlatform(ctx, inst, false, "START RequestId:"+rec.RequestId); err != nil {
		w.discard(wm)
		return err
	}
	if err := wm.in.Release(ctx, inst, env); err != nil {
		return unusable(err)
	}
	return nil
}

// running hands a started instance to a supervisor and records it
// RUNNING. ctr is its container id when it is not inst (provisioned).
func (w *Worker) running(ctx context.Context, in *runtime.Instance, exitC <-chan runtime.ExitStatus, rec *record.Record, fn *config.Function,
	inst, ctr string, adm *admission, img *runtime.Image, log zerolog.Logger, t0, tImage, tCreate time.Time) {
	started := w.now()
	deadline := started.Add(fn.Timeout())
	w.supervise(in, exitC, sup{
		id: rec.RequestId, inst: inst, ctr: ctr, function: fn.Name, attempt: rec.Attempt, deadline: deadline, started: started,
		memoryMB: fn.MemoryMB, timeoutS: fn.TimeoutS, adm: adm,
	})

	// Bookkeeping after Start must not be lost to a cancelled handler.
	// RUNNING first: it answers wait=scheduled callers, and it is what
	// keeps a redelivery from starting the attempt again.
	bctx := context.WithoutCancel(ctx)
	code := record.CodeRunning
	err := w.records.UpdateFrom(bctx, rec.RequestId, []record.Status{record.Scheduling, record.Pending}, record.Update{
		Status: record.Running, StatusCode: &code, StartTime: &started, ImageDigest: &img.Digest, Node: &w.config().Worker.Node,
	})
	if errors.Is(err, record.ErrStatus) {
		// Terminated in the instant before Start: honour it now.
		w.deliverStop(bctx, rec.RequestId)
	} else if err != nil {
		log.Warn().Err(err).Msg("record RUNNING")
	}
	if err := w.keepClaim(bctx, inst); err != nil {
		log.Warn().Err(err).Msg("persist start claim")
	}
	if w.metrics != nil {
		w.metrics.ScheduleSeconds.WithLabelValues(fn.Name).Observe(started.Sub(parseTime(rec.EnqueueTime)).Seconds())
	}
	log.Info().Str("image", fn.Image).Str("digest", img.Digest).
		Dur("queued_ms", t0.Sub(parseTime(rec.EnqueueTime))).Dur("image_ms", tImage.Sub(t0)).
		Dur("create_ms", tCreate.Sub(tImage)).Dur("start_ms", started.Sub(tCreate)).Bool("provisioned", ctr != "").Msg("instance started")
}

// fail records a permanent failure, dead-letters the event and tells
// asynq not to retry.
func (w *Worker) fail(ctx context.Context, rec *record.Record, f *failure) error {
	ctx = context.WithoutCancel(ctx)
	now := w.now()
	msg := f.err.Error()
	err := w.records.Update(ctx, rec.RequestId, record.Update{Status: record.Failed, StatusCode: &f.code, Message: &msg, EndTime: &now})
	if errors.Is(err, record.ErrTerminal) {
		return fmt.Errorf("%w: %w", f, asynq.SkipRetry)
	}
	if err != nil {
		return err // Redis trouble: let asynq retry the whole thing
	}
	inst := record.InstanceID(rec.RequestId, rec.Attempt)
	_ = w.logs.AppendPlatform(ctx, inst, true, fmt.Sprintf("ERROR RequestId:%s %s: %s", rec.RequestId, record.CodeName(f.code), msg))
	w.deadLetter(ctx, rec.RequestId, f.code, msg)
	return fmt.Errorf("%w: %w", f, asynq.SkipRetry)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(record.TimeFormat, s)
	return t
}
