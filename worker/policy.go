package worker

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jobgate/jobgate/internal/record"
)

// This file is the failure policy, in one place (asynq's
// handleFailedMessage): what happens to an attempt that could not start,
// and to one whose process ended. The attempt runner carries the
// decisions out; nothing else decides.

// Waiting errors: the event is fine but must wait for a slot. asynq
// retries them without counting a failure (SCF's 432 semantics); the
// event's age bounds the wait.
var (
	// errOverLimit: the function runs at its concurrency (SCF 432).
	errOverLimit = errors.New("function is at its concurrency limit")
	// errNodeFull: this worker's capacity_mb is used up.
	errNodeFull = errors.New("worker capacity is used up")
	// errNotMine: another worker holds the start claim.
	errNotMine = errors.New("invocation claimed by another worker")
	// errBeingScheduled: another delivery of the same task is being
	// handled on this worker (asynq can hand a task out twice when Redis
	// fails over and loses the first hand-over). Only the first may touch
	// the instance: the claim is this node's for both, and the second
	// would take the first's half-made container for a crash's leftover.
	errBeingScheduled = errors.New("invocation being scheduled by another delivery on this worker")
)

// errTerminated: a user terminated the invocation while it was being
// scheduled; it was not started.
var errTerminated = errors.New("terminated before start")

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

// isWait reports whether err only means "not now".
func isWait(err error) bool {
	return errors.Is(err, errOverLimit) || errors.Is(err, errNodeFull) || errors.Is(err, errNotMine) || errors.Is(err, errBeingScheduled)
}

// onStartError is what to do with an attempt whose start failed.
type onStartError int

const (
	// startRetry: transient (registry or containerd down, Redis trouble):
	// back to PENDING with the reason; asynq retries with backoff until
	// the event's age runs out.
	startRetry onStartError = iota
	// startWait: no slot yet; PENDING with startWaitCode, retried without
	// counting a failure.
	startWait
	// startFail: permanent (bad image, bad command, too large): FAILED,
	// dead-lettered, never retried.
	startFail
	// startDropped: terminated while scheduling; the record says so
	// already, the task is acknowledged.
	startDropped
)

// decideStart classifies a start error, with the SCF status code the
// record gets.
func decideStart(err error) (onStartError, int) {
	var f *failure
	switch {
	case errors.Is(err, errTerminated):
		return startDropped, record.CodeRequestCanceled
	case errors.Is(err, errOverLimit):
		return startWait, record.CodeConcurrencyLimit
	case isWait(err):
		return startWait, record.CodeRunning
	case errors.As(err, &f) && f.permanent:
		return startFail, f.code
	}
	return startRetry, record.CodeRunning
}

// retryDelay is asynq's backoff for a task that returned err: over the
// function's concurrency, limitRetry (about a minute, SCF); node full or
// being scheduled here already, a couple of seconds; claimed elsewhere, 10 s; otherwise exponential
// backoff capped at 5 min (SCF's cap for system errors).
func retryDelay(n int, err error, limitRetry time.Duration) time.Duration {
	switch {
	case errors.Is(err, errOverLimit):
		return limitRetry
	case errors.Is(err, errNodeFull), errors.Is(err, errBeingScheduled):
		return 2 * time.Second
	case errors.Is(err, errNotMine):
		return 10 * time.Second
	}
	return min(time.Second<<min(n, 9), 5*time.Minute)
}

// expired reports whether an event queued at enqueued is too old to start
// at now (SCF's MsgTTL), and the failure to record if so: it keeps the
// last scheduling error's code when there was one.
func expired(enqueued, now time.Time, maxAge time.Duration, rec *record.Record) error {
	age := now.Sub(enqueued)
	if age <= maxAge {
		return nil
	}
	why := "event expired: queued " + age.Round(time.Second).String() + " ago, over max_event_age_s=" + strconv.Itoa(int(maxAge/time.Second))
	if rec.Message != "" {
		why += "; last: " + rec.Message
	}
	code := record.CodeInternalError
	if rec.StatusCode != record.CodeRunning && rec.StatusCode != 0 {
		code = rec.StatusCode
	}
	return permanent(code, errors.New(why))
}

// afterExit is what follows an attempt's outcome.
type afterExit struct {
	retry      bool          // run attempt+1 after delay
	delay      time.Duration // retry.delay_s
	deadLetter bool          // the invocation ends FAILED: keep its event
}

// retryPolicy is a function's retry settings as the policy needs them.
type retryPolicy struct {
	max    int           // retry.max: re-runs after a failed exit
	delay  time.Duration // retry.delay_s
	maxAge time.Duration // max_event_age_s
}

// decideExit: a failed exit (439 non-zero, 433 timeout, 434 OOM) re-runs
// as the next attempt while retry.max and the event's age allow (the next
// attempt must start within max_event_age_s). A disk-quota stop is the
// instance breaking its contract and is not retried; a terminate is the
// user's choice. Whatever ends FAILED is dead-lettered. A nil policy (the
// function left the config) never retries.
func decideExit(o outcome, attempt int, p *retryPolicy, enqueued, now time.Time) afterExit {
	if o.Status != record.Failed {
		return afterExit{}
	}
	retriable := o.StatusCode != record.CodeDiskQuotaExceeded
	if retriable && p != nil && attempt <= p.max && now.Add(p.delay).Sub(enqueued) <= p.maxAge {
		return afterExit{retry: true, delay: p.delay}
	}
	return afterExit{deadLetter: true}
}

// Why a supervisor stopped its instance.
const (
	stopTimeout   = "timeout"
	stopTerminate = "terminate"
	stopFenced    = "fenced" // the worker lost its lease (see lease.go)
	stopDisk      = "disk"
)

// outcome is how an attempt ended, as recorded (and kept in the
// container's outcome label until the record has it).
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

// outcomeOf maps how an instance ended to SCF's status and code. A stop
// the supervisor made wins over the exit code; an OOM kill wins over exit
// 0 (a PID 1 may survive the kill of a child).
func outcomeOf(stopReason, detail string, oom bool, exit int, started, end time.Time, peak int64, memoryMB int) outcome {
	o := outcome{ExitCode: exit, EndTime: end, DurationMs: max(end.Sub(started).Milliseconds(), 0), PeakBytes: peak, MemoryMB: memoryMB}
	switch {
	case stopReason == stopTerminate:
		o.Status, o.StatusCode, o.Message = record.Aborted, record.CodeRequestCanceled, detail
	case stopReason == stopTimeout:
		o.Status, o.StatusCode, o.Message = record.Failed, record.CodeTimeLimitReached, detail
	case stopReason == stopDisk:
		o.Status, o.StatusCode, o.Message = record.Failed, record.CodeDiskQuotaExceeded, detail
	case stopReason == stopFenced:
		o.Status, o.StatusCode, o.Message = record.Failed, record.CodeNodeLost, detail
	case oom:
		o.Status, o.StatusCode = record.Failed, record.CodeMemoryLimitReached
		o.Message = fmt.Sprintf("memory limit of %d MB reached: the kernel OOM-killed a process (exit code %d)", memoryMB, exit)
	case exit == 0:
		o.Status, o.StatusCode = record.Finished, record.CodeOK
	default:
		o.Status, o.StatusCode = record.Failed, record.CodeUserProcessExited
		o.Message = fmt.Sprintf("process exited with code %d", exit)
	}
	return o
}
