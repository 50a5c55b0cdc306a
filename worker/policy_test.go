package worker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/worker/runtime"
)

func TestDecideStart(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		err    error
		action onStartError
		code   int
	}{
		{"terminated while scheduling", fmt.Errorf("start: %w", errTerminated), startDropped, record.CodeRequestCanceled},
		{"over the function's concurrency", fmt.Errorf("%w (3)", errOverLimit), startWait, record.CodeConcurrencyLimit},
		{"node full", fmt.Errorf("%w: 512 of 512 MB", errNodeFull), startWait, record.CodeRunning},
		{"claimed by another worker", errNotMine, startWait, record.CodeRunning},
		{"bad image", permanent(record.CodePullImageFailed, errors.New("no linux/amd64")), startFail, record.CodePullImageFailed},
		{"bad command", fmt.Errorf("create: %w", permanent(record.CodeContainerInitError, errors.New("exec: not found"))), startFail, record.CodeContainerInitError},
		{"transient failure value", &failure{code: record.CodeInternalError, err: errors.New("x")}, startRetry, record.CodeRunning},
		{"registry down", errors.New("dial tcp: connection refused"), startRetry, record.CodeRunning},
		{"shim failed to start (the platform's fault)", fmt.Errorf("create task x: %w: dial unix: no such file", runtime.ErrRuntimeFailed), startRetry, record.CodeRunning},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			action, code := decideStart(c.err)
			if action != c.action || code != c.code {
				t.Fatalf("decideStart(%v) = %d, %d; want %d, %d", c.err, action, code, c.action, c.code)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	limit := 60 * time.Second
	cases := []struct {
		n    int
		err  error
		want time.Duration
	}{
		{0, errOverLimit, limit},
		{5, errNodeFull, 2 * time.Second},
		{1, errNotMine, 10 * time.Second},
		{7, errBeingScheduled, 2 * time.Second},
		{0, errors.New("registry down"), time.Second},
		{3, errors.New("registry down"), 8 * time.Second},
		{20, errors.New("registry down"), 5 * time.Minute},
	}
	for _, c := range cases {
		if got := retryDelay(c.n, c.err, limit); got != c.want {
			t.Errorf("retryDelay(%d, %v) = %s, want %s", c.n, c.err, got, c.want)
		}
	}
}

func TestExpired(t *testing.T) {
	t.Parallel()
	enq := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := expired(enq, enq.Add(time.Hour), 6*time.Hour, &record.Record{}); err != nil {
		t.Fatalf("an hour-old event expired: %v", err)
	}
	err := expired(enq, enq.Add(7*time.Hour), 6*time.Hour, &record.Record{StatusCode: record.CodePullImageFailed, Message: "registry down"})
	var f *failure
	if !errors.As(err, &f) || !f.permanent || f.code != record.CodePullImageFailed {
		t.Fatalf("expired event: %#v, want a permanent 444 (the last error's code)", err)
	}
	err = expired(enq, enq.Add(7*time.Hour), 6*time.Hour, &record.Record{StatusCode: record.CodeRunning})
	if !errors.As(err, &f) || f.code != record.CodeInternalError {
		t.Fatalf("expired event without an earlier error: %#v, want 500", err)
	}
}

func TestDecideExit(t *testing.T) {
	t.Parallel()
	enq := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &retryPolicy{max: 2, delay: time.Minute, maxAge: time.Hour}
	failed := func(code int) outcome { return outcome{Status: record.Failed, StatusCode: code} }
	cases := []struct {
		name    string
		o       outcome
		attempt int
		p       *retryPolicy
		now     time.Time
		want    afterExit
	}{
		{"finished", outcome{Status: record.Finished, StatusCode: record.CodeOK}, 1, p, enq, afterExit{}},
		{"aborted by the user", outcome{Status: record.Aborted, StatusCode: record.CodeRequestCanceled}, 1, p, enq, afterExit{}},
		{"non-zero exit, retries left", failed(record.CodeUserProcessExited), 1, p, enq, afterExit{retry: true, delay: time.Minute}},
		{"timeout, last retry", failed(record.CodeTimeLimitReached), 2, p, enq, afterExit{retry: true, delay: time.Minute}},
		{"OOM, retries used up", failed(record.CodeMemoryLimitReached), 3, p, enq, afterExit{deadLetter: true}},
		{"disk quota is never retried", failed(record.CodeDiskQuotaExceeded), 1, p, enq, afterExit{deadLetter: true}},
		{"next attempt would start too late", failed(record.CodeUserProcessExited), 1, p, enq.Add(59*time.Minute + time.Second), afterExit{deadLetter: true}},
		{"function left the config", failed(record.CodeUserProcessExited), 1, nil, enq, afterExit{deadLetter: true}},
		{"no retries configured", failed(record.CodeUserProcessExited), 1, &retryPolicy{max: 0, maxAge: time.Hour}, enq, afterExit{deadLetter: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := decideExit(c.o, c.attempt, c.p, enq, c.now); got != c.want {
				t.Fatalf("decideExit = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestOutcomeOf(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		reason string
		oom    bool
		exit   int
		status record.Status
		code   int
	}{
		{"exit 0", "", false, 0, record.Finished, record.CodeOK},
		{"exit 3", "", false, 3, record.Failed, record.CodeUserProcessExited},
		{"OOM kill wins over exit 0", "", true, 0, record.Failed, record.CodeMemoryLimitReached},
		{"timeout wins over the exit code", stopTimeout, false, 137, record.Failed, record.CodeTimeLimitReached},
		{"terminate", stopTerminate, true, 137, record.Aborted, record.CodeRequestCanceled},
		{"disk", stopDisk, false, 137, record.Failed, record.CodeDiskQuotaExceeded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := outcomeOf(c.reason, "detail", c.oom, c.exit, start, start.Add(1500*time.Millisecond), 1<<20, 64)
			if o.Status != c.status || o.StatusCode != c.code || o.ExitCode != c.exit || o.DurationMs != 1500 {
				t.Fatalf("outcomeOf = %+v, want %s/%d exit %d after 1500 ms", o, c.status, c.code, c.exit)
			}
		})
	}
	// An exit stamped before the recorded start (clock skew between the
	// shim and the worker) is not a negative duration.
	if o := outcomeOf("", "", false, 0, start, start.Add(-12*time.Millisecond), 0, 64); o.DurationMs != 0 {
		t.Fatalf("negative duration: %d", o.DurationMs)
	}
}
