// Package submit is the one path by which an event becomes an invocation:
// check it against the function's limits, record it as PENDING, and enqueue
// it durably. The invoke API and every trigger go through Submit.
package submit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
)

// Errors that callers map to answers.
var (
	ErrUnknownFunction = errors.New("unknown function")
	// ErrUnavailable means the event is NOT durably queued (Redis refused
	// or is unreachable); the sender must retry.
	ErrUnavailable = errors.New("queue unavailable")
)

// Enqueuer is the part of asynq.Client that Submit needs.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Submitter turns events into queued invocations.
type Submitter struct {
	cfg     *config.Config
	records *record.Store
	queue   Enqueuer
	now     func() time.Time
}

// New returns a Submitter.
func New(cfg *config.Config, records *record.Store, q Enqueuer) *Submitter {
	return &Submitter{cfg: cfg, records: records, queue: q, now: time.Now}
}

// Request is one event for one function.
type Request struct {
	Function    string
	Event       []byte
	RequestID   string // "" = a random UUID
	Source      string // RequestSource, e.g. "API", "TRIGGER_TIMER"
	TriggerName string
}

// Result of Submit.
type Result struct {
	Record    *record.Record
	Duplicate bool // the RequestId was already known; nothing new queued
}

// namespaceUUID seeds deterministic RequestIds.
var namespaceUUID = uuid.MustParse("6b0f3a4e-3f43-4c4e-9d55-6a6f62676174")

// DeriveRequestID makes a stable RequestId from source-specific parts
// (function + idempotency key, trigger + fire time, ...).
func DeriveRequestID(parts ...string) string {
	return uuid.NewSHA1(namespaceUUID, []byte(strings.Join(parts, "\x00"))).String()
}

// TaskTimeout bounds one scheduling attempt (pull + create + start).
func TaskTimeout(cfg *config.Config) time.Duration { return cfg.Worker.PullTimeout() + 2*time.Minute }

// Submit records and enqueues one event.
func (s *Submitter) Submit(ctx context.Context, req Request) (Result, error) {
	fn := s.cfg.Function(req.Function)
	if fn == nil {
		return Result{}, fmt.Errorf("%w %q", ErrUnknownFunction, req.Function)
	}
	id := req.RequestID
	if id == "" {
		id = uuid.NewString()
	}
	env := jobenv.Build(nil, fn.Env, jobenv.Builtins{
		FunctionName: fn.Name, Region: s.cfg.Region, AppID: s.cfg.AppID, UIN: s.cfg.UIN, RequestID: id, Attempt: 1,
	}, req.Event)
	if err := jobenv.CheckEnv(env); err != nil {
		return Result{}, fmt.Errorf("event for %s: %w", fn.Name, err)
	}
	rec := &record.Record{
		RequestId: id, FunctionName: fn.Name, Namespace: fn.Namespace, Qualifier: "$LATEST",
		RequestSource: req.Source, TriggerName: req.TriggerName, Status: record.Pending, StatusCode: 202,
		Attempt: 1, EnqueueTime: s.now().UTC().Format(record.TimeFormat),
	}
	created, existing, err := s.records.Create(ctx, rec, req.Event)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !created {
		return Result{Record: existing, Duplicate: true}, nil
	}
	task, opts, err := queue.NewInvokeTask(queue.Payload{RequestId: id, Function: fn.Name}, queue.Options{
		MaxRetry: 10, Timeout: TaskTimeout(s.cfg), Retention: s.cfg.Retention(),
	})
	if err != nil {
		return Result{}, err
	}
	_, err = s.queue.EnqueueContext(ctx, task, opts...)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		// The task outlived its record (retention): still one run per id.
		return Result{Record: rec, Duplicate: true}, nil
	case err != nil:
		// Not queued: take the record back so nothing claims it exists.
		if derr := s.records.Delete(context.WithoutCancel(ctx), rec); derr != nil {
			err = errors.Join(err, derr)
		}
		return Result{}, fmt.Errorf("%w: enqueue %s: %w", ErrUnavailable, id, err)
	}
	return Result{Record: rec}, nil
}
