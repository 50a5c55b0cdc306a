// Package submit is the one path by which an event becomes an invocation:
// check it against the function's limits, record it as PENDING, and enqueue
// it durably. The invoke API and every trigger go through Submit.
package submit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/metrics"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
)

// Errors that callers map to answers.
var (
	ErrUnknownFunction = errors.New("unknown function")
	// ErrUnavailable means the event is NOT durably queued (Redis refused
	// or is unreachable); the sender must retry.
	ErrUnavailable = errors.New("queue unavailable")
	// ErrKeyReused: the caller's idempotency key is already taken by a
	// different request (its fingerprint differs).
	ErrKeyReused = errors.New("idempotency key reused with a different request")
)

// Enqueuer is the part of asynq.Client that Submit needs.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Submitter turns events into queued invocations.
type Submitter struct {
	cfg     atomic.Pointer[config.Config] // swapped by SetConfig (SIGHUP)
	records *record.Store
	queue   Enqueuer
	now     func() time.Time
	metrics *metrics.Metrics
}

// WithMetrics counts queued events in m.
func (s *Submitter) WithMetrics(m *metrics.Metrics) *Submitter {
	s.metrics = m
	return s
}

// New returns a Submitter.
func New(cfg *config.Config, records *record.Store, q Enqueuer) *Submitter {
	s := &Submitter{records: records, queue: q, now: time.Now}
	s.cfg.Store(cfg)
	return s
}

// SetConfig makes later submissions use cfg (functions added, removed or
// changed by a reload).
func (s *Submitter) SetConfig(cfg *config.Config) { s.cfg.Store(cfg) }

func (s *Submitter) config() *config.Config { return s.cfg.Load() }

// Request is one event for one function.
type Request struct {
	Function    string
	Event       []byte
	RequestID   string // "" = a random UUID
	Source      string // RequestSource, e.g. "API", "TRIGGER_TIMER"
	TriggerName string
	// Fingerprint identifies the request behind a caller-chosen key (a
	// hash of what it sent); a duplicate RequestId with another
	// fingerprint is ErrKeyReused. "" = not checked.
	Fingerprint string
}

// Fingerprint hashes the parts of a request that a reused idempotency key
// must match.
func Fingerprint(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
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

// Requeue enqueues attempt n of an existing invocation after delay.
func (s *Submitter) Requeue(ctx context.Context, id, function string, attempt int, delay time.Duration) error {
	task, opts, err := queue.NewInvokeTask(queue.Payload{RequestId: id, Function: function, Attempt: attempt}, queue.Options{
		// Transient scheduling errors retry until max_event_age_s runs
		// out (checked by the worker), not until a count does.
		MaxRetry: 1 << 20, Timeout: TaskTimeout(s.config()), Retention: s.config().Retention(), Delay: delay,
	})
	if err != nil {
		return err
	}
	if _, err := s.queue.EnqueueContext(ctx, task, opts...); err != nil {
		return fmt.Errorf("enqueue %s attempt %d: %w", id, attempt, err)
	}
	return nil
}

// Submit records and enqueues one event.
func (s *Submitter) Submit(ctx context.Context, req Request) (Result, error) {
	cfg := s.config()
	fn := cfg.Function(req.Function)
	if fn == nil {
		return Result{}, fmt.Errorf("%w %q", ErrUnknownFunction, req.Function)
	}
	id := req.RequestID
	if id == "" {
		id = uuid.NewString()
	}
	env := jobenv.Build(nil, fn.Env, jobenv.Builtins{
		FunctionName: fn.Name, Region: cfg.Region, AppID: cfg.AppID, UIN: cfg.UIN, RequestID: id, Attempt: 1,
	}, req.Event)
	if err := jobenv.CheckEnv(env); err != nil {
		return Result{}, fmt.Errorf("event for %s: %w", fn.Name, err)
	}
	rec := &record.Record{
		RequestId: id, FunctionName: fn.Name, Namespace: fn.Namespace, Qualifier: "$LATEST",
		RequestSource: req.Source, TriggerName: req.TriggerName, Status: record.Pending, StatusCode: 202,
		Attempt: 1, EnqueueTime: s.now().UTC().Format(record.TimeFormat), Fingerprint: req.Fingerprint,
	}
	created, existing, err := s.records.Create(ctx, rec, req.Event)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !created {
		if req.Fingerprint != "" && existing.Fingerprint != "" && req.Fingerprint != existing.Fingerprint {
			return Result{Record: existing}, fmt.Errorf("%w: %s", ErrKeyReused, id)
		}
		// A sender that crashed between recording and enqueueing retries
		// with the same RequestId: make sure the task exists (asynq
		// refuses a second one with the same ID).
		if existing.Status == record.Pending {
			err := s.Requeue(ctx, id, fn.Name, existing.Attempt, 0)
			if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
				return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
		}
		return Result{Record: existing, Duplicate: true}, nil
	}
	err = s.Requeue(ctx, id, fn.Name, 1, 0)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		// A racing duplicate (another gateway, a redelivery) saw our record
		// and made sure of the task first: still one task, and this call
		// is the one that recorded the event.
		return Result{Record: rec}, nil
	case err != nil:
		// Not queued: take the record back so nothing claims it exists.
		if derr := s.records.Delete(context.WithoutCancel(ctx), rec); derr != nil {
			err = errors.Join(err, derr)
		}
		return Result{}, fmt.Errorf("%w: enqueue %s: %w", ErrUnavailable, id, err)
	}
	if s.metrics != nil {
		s.metrics.EventsIn.WithLabelValues(req.Source, fn.Name).Inc()
	}
	return Result{Record: rec}, nil
}

// Redrive runs a dead-lettered invocation again: as its next attempt while
// its record exists, else as a new invocation of the same event.
func (s *Submitter) Redrive(ctx context.Context, e *deadletter.Entry) (*record.Record, error) {
	rec, err := s.records.Get(ctx, e.RequestId)
	if errors.Is(err, record.ErrNotFound) {
		res, err := s.Submit(ctx, Request{
			Function: e.Body.FunctionName, Event: []byte(e.Body.ClientContext), Source: e.Body.RequestSource,
			RequestID: DeriveRequestID("redrive", e.RequestId, e.DeadTime),
		})
		return res.Record, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	next := rec.Attempt + 1
	err = s.records.UpdateFrom(ctx, rec.RequestId, []record.Status{record.Failed}, record.Update{
		Status: record.Pending, StatusCode: record.Ptr(record.CodeRunning), Attempt: &next, ClearRun: true,
		Message: record.Ptr("redriven from the dead-letter list"), AppendAttempt: rec.Summary(),
	})
	if err != nil {
		return nil, fmt.Errorf("redrive %s: %w", rec.RequestId, err)
	}
	if err := s.Requeue(ctx, rec.RequestId, rec.FunctionName, next, 0); err != nil {
		// Not queued: put the record back as it was.
		_ = s.records.UpdateFrom(context.WithoutCancel(ctx), rec.RequestId, []record.Status{record.Pending}, record.Update{
			Status: record.Failed, StatusCode: &rec.StatusCode, Message: &rec.Message, Attempt: &rec.Attempt,
		})
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return s.records.Get(ctx, rec.RequestId)
}

// EventRoom is the largest event (in bytes) that fits function's
// environment limits: what a batching source may fill.
func (s *Submitter) EventRoom(function string) int {
	cfg := s.config()
	fn := cfg.Function(function)
	if fn == nil {
		return 0
	}
	env := jobenv.Build(nil, fn.Env, jobenv.Builtins{
		FunctionName: fn.Name, Region: cfg.Region, AppID: cfg.AppID, UIN: cfg.UIN,
		RequestID: "00000000-0000-0000-0000-000000000000", Attempt: 99,
	}, nil)
	total := 0
	for _, kv := range env {
		total += len(kv) + 1
	}
	return min(jobenv.MaxEventBytes, jobenv.MaxTotal-total)
}

// Known reports whether an invocation with this RequestId is recorded.
func (s *Submitter) Known(ctx context.Context, id string) (bool, error) {
	_, err := s.records.Get(ctx, id)
	if errors.Is(err, record.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
