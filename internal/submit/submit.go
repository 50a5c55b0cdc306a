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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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
	// ErrBadDelay: a delayed invocation's time is too far ahead.
	ErrBadDelay = errors.New("bad delay")
	// ErrBadBatch: a batch's size or total bytes are out of bounds.
	ErrBadBatch = errors.New("bad batch")
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
	rdb     redis.UniversalClient
	commits *committer
	own     redis.UniversalClient // the committer's client, if it has its own (Close)
	rooms   sync.Map              // *config.Function → its event room (room)
	now     func() time.Time
	metrics *metrics.Metrics
}

// WithMetrics counts queued events in m.
func (s *Submitter) WithMetrics(m *metrics.Metrics) *Submitter {
	s.metrics = m
	return s
}

// How long a submission keeps retrying when Redis cannot be reached
// before it is answered ErrUnavailable: a restart or failover that takes
// less is invisible to senders. A write that may have run (its
// connection broke after sending) waits longer, since answering then
// might be untrue (see committer).
const (
	unavailableWait = 3 * time.Second
	uncertainWait   = 30 * time.Second
)

// New returns a Submitter writing to rdb (records through records, first
// attempts' tasks directly, retries through q).
func New(cfg *config.Config, rdb redis.UniversalClient, records *record.Store, q Enqueuer) *Submitter {
	s := &Submitter{records: records, queue: q, rdb: rdb, now: time.Now}
	s.commits = &committer{rdb: rdb, wait: unavailableWait, uncertainWait: uncertainWait, cancel: func(w *write, only []int) { cancelLater(rdb, w, only) },
		replicas: cfg.Redis.WaitReplicas, replicaTimeout: cfg.Redis.WaitTimeout()}
	s.cfg.Store(cfg)
	return s
}

// WithCommitClient makes group commits go through c, a client built
// never to resend by itself (redisconn.NoRetries): go-redis would resend
// a pipeline whose answer was lost and report the resend's error
// ("connection refused"), hiding that the first may have run; the
// committer retries itself, knowing which writes are uncertain. The
// submitter closes c. Without it, commits share rdb.
func (s *Submitter) WithCommitClient(c redis.UniversalClient) *Submitter {
	if s.own != nil {
		s.own.Close()
	}
	s.own, s.commits.rdb = c, c
	return s
}

// Close releases the committer's own Redis connections.
func (s *Submitter) Close() error {
	if s.own == nil {
		return nil
	}
	return s.own.Close()
}

// SetConfig makes later submissions use cfg (functions added, removed or
// changed by a reload).
func (s *Submitter) SetConfig(cfg *config.Config) {
	s.cfg.Store(cfg)
	s.rooms.Clear()
}

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
	// At delays the invocation until then (SCHEDULED until due); zero
	// or past = now. At most submit.max_delay_h ahead (ErrBadDelay).
	At time.Time
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
	for _, p := range parts {
		if strings.IndexByte(p, 0) >= 0 {
			// Joined with NUL, a part holding one could pose as two parts
			// and pre-claim another source's id: such inputs are length-
			// prefixed, in a namespace of their own. Inputs without NUL
			// keep their ids (no id in flight changes on upgrade).
			var b []byte
			for _, p := range parts {
				b = strconv.AppendInt(b, int64(len(p)), 10)
				b = append(b, ':')
				b = append(b, p...)
			}
			return uuid.NewSHA1(nulPartsUUID, b).String()
		}
	}
	return uuid.NewSHA1(namespaceUUID, []byte(strings.Join(parts, "\x00"))).String()
}

// nulPartsUUID is the namespace of ids derived from parts holding a NUL.
var nulPartsUUID = uuid.NewSHA1(uuid.NameSpaceOID, []byte("jobgate.request-id.length-prefixed"))

// TaskTimeout bounds one scheduling attempt (pull + create + start).
func TaskTimeout(cfg *config.Config) time.Duration { return cfg.Worker.PullTimeout() + 2*time.Minute }

// taskOptions are every invocation task's.
func (s *Submitter) taskOptions(delay time.Duration) queue.Options {
	cfg := s.config()
	// Transient scheduling errors retry until max_event_age_s runs out
	// (checked by the worker), not until a count does.
	return queue.Options{MaxRetry: 1 << 20, Timeout: TaskTimeout(cfg), Retention: cfg.Retention(), Delay: delay}
}

// Requeue enqueues attempt n of an existing invocation after delay.
func (s *Submitter) Requeue(ctx context.Context, id, function string, attempt int, delay time.Duration) error {
	task, opts, err := queue.NewInvokeTask(queue.Payload{RequestId: id, Function: function, Attempt: attempt}, s.taskOptions(delay))
	if err != nil {
		return err
	}
	if _, err := s.queue.EnqueueContext(ctx, task, opts...); err != nil {
		return fmt.Errorf("enqueue %s attempt %d: %w", id, attempt, err)
	}
	return nil
}

// QueueDestination queues one delivery of a final status; queued
// already (its ID), it is not queued again.
func (s *Submitter) QueueDestination(ctx context.Context, d queue.Destination, retries int) error {
	task, opts, err := queue.NewDestinationTask(d, retries, s.taskOptions(0).Retention)
	if err != nil {
		return err
	}
	if _, err := s.queue.EnqueueContext(ctx, task, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("queue destination %s: %w", d.ID(), err)
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
	now := s.now()
	due := req.At
	if !due.After(now) {
		due = time.Time{}
	} else if limit := cfg.Submit.MaxDelay(); due.Sub(now) > limit {
		return Result{}, fmt.Errorf("%w: %s is more than submit.max_delay_h (%s) ahead", ErrBadDelay, due.UTC().Format(time.RFC3339), limit)
	}
	rec, err := s.newRecord(cfg, fn, id, req, now)
	if err != nil {
		return Result{}, err
	}
	if !due.IsZero() {
		rec.Status, rec.ScheduledTime = record.Scheduled, due.UTC().Format(record.TimeFormat)
	}
	op, task, err := s.prepare(rec, now, req.Event)
	if err != nil {
		return Result{}, err
	}
	if !due.IsZero() {
		op.TTLms += due.Sub(now).Milliseconds() // kept its retention after it is due
	}
	w := newWrite(now, op.TTLms, op.Oldest, 1, req.RequestID == "")
	w.add(op, task, due, s.commits.hideUntil(now))
	s.commits.commit(w)
	if w.err != nil {
		return Result{}, fmt.Errorf("%w: submit %s: %w", ErrUnavailable, id, w.err)
	}
	return s.answer(ctx, req, rec, w.results[0])
}

// newRecord checks event against fn's environment limits and returns
// the PENDING record of invocation id.
func (s *Submitter) newRecord(cfg *config.Config, fn *config.Function, id string, req Request, now time.Time) (*record.Record, error) {
	// Most events are far below the room the function's environment
	// leaves (cached per function); only a large one has the whole
	// environment built and checked, for the exact error.
	if len(req.Event) > s.room(cfg, fn) || len(id) > len(roomID) {
		b := jobenv.Builtins{FunctionName: fn.Name, Region: cfg.Region, AppID: cfg.AppID, UIN: cfg.UIN, RequestID: id, Attempt: 1}
		err := jobenv.CheckEnv(jobenv.Build(nil, fn.Env, b, req.Event))
		if err != nil && fn.EventsByFile() {
			// It reaches the job as a file (the worker decides the same
			// way): the environment holds a stub.
			if len(req.Event) > fn.MaxEventBytes() {
				return nil, fmt.Errorf("event for %s: %w", fn.Name, &jobenv.LimitError{What: "the event", Size: len(req.Event),
					Limit: fn.MaxEventBytes(), Rule: "the function's max_event_mb"})
			}
			b.EventFile = jobenv.EventFilePath
			err = jobenv.CheckEnv(jobenv.Build(nil, fn.Env, b, jobenv.FileStub(len(req.Event))))
		}
		if err != nil {
			return nil, fmt.Errorf("event for %s: %w", fn.Name, err)
		}
	}
	return &record.Record{
		RequestId: id, FunctionName: fn.Name, Namespace: fn.Namespace, Qualifier: "$LATEST",
		RequestSource: req.Source, TriggerName: req.TriggerName, Status: record.Pending, StatusCode: 202,
		Attempt: 1, EnqueueTime: now.UTC().Format(record.TimeFormat), Fingerprint: req.Fingerprint,
	}, nil
}

// prepare is what the Submit script writes for rec: its creation and
// its first attempt's task, in asynq's stored form.
func (s *Submitter) prepare(rec *record.Record, enq time.Time, event []byte) (record.CreateOp, queue.Encoded, error) {
	op := s.records.NewCreateAt(rec, enq, event)
	task, err := queue.Encode(queue.Payload{RequestId: rec.RequestId, Function: rec.FunctionName, Attempt: 1}, s.taskOptions(0))
	return op, task, err
}

// MaxBatch bounds a batch's events; MaxBatchBytes its events' total size.
const (
	MaxBatch      = 1000
	MaxBatchBytes = 8 << 20
)

// BatchRequest is many events for one function, queued all or nothing.
type BatchRequest struct {
	Function string
	Events   [][]byte
	// Key is the caller's idempotency key for the whole batch ("" =
	// none): event i's RequestId is derived from it and i, and a replay
	// of the batch answers the same RequestIds without queueing again.
	Key string
	// Fingerprint identifies the batch behind Key (see Request).
	Fingerprint string
	Source      string
}

// BatchError names the event a batch was refused for; nothing of the
// batch is queued.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string { return fmt.Sprintf("event %d: %v", e.Index, e.Err) }
func (e *BatchError) Unwrap() error { return e.Err }

// SubmitBatch checks every event, then records and queues them all in
// one script: every event is queued, or none (an error). The results are
// in the events' order.
func (s *Submitter) SubmitBatch(ctx context.Context, req BatchRequest) ([]Result, error) {
	cfg := s.config()
	fn := cfg.Function(req.Function)
	if fn == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownFunction, req.Function)
	}
	if n := len(req.Events); n == 0 || n > MaxBatch {
		return nil, fmt.Errorf("%w: a batch holds 1 to %d events, not %d", ErrBadBatch, MaxBatch, n)
	}
	now := s.now()
	recs := make([]*record.Record, len(req.Events))
	var w *write
	total := 0
	for i, ev := range req.Events {
		total += len(ev)
		if total > MaxBatchBytes {
			return nil, &BatchError{i, fmt.Errorf("%w: the batch's events exceed %d bytes", ErrBadBatch, MaxBatchBytes)}
		}
		id := uuid.NewString()
		if req.Key != "" {
			id = DeriveRequestID("idempotency-key-batch", fn.Name, req.Key, strconv.Itoa(i))
		}
		one := Request{Function: fn.Name, Event: ev, Source: req.Source, Fingerprint: req.Fingerprint}
		rec, err := s.newRecord(cfg, fn, id, one, now)
		if err != nil {
			return nil, &BatchError{i, err}
		}
		op, task, err := s.prepare(rec, now, ev)
		if err != nil {
			return nil, &BatchError{i, err}
		}
		if w == nil {
			w = newWrite(now, op.TTLms, op.Oldest, len(req.Events), req.Key == "")
		}
		w.add(op, task, time.Time{}, s.commits.hideUntil(now))
		recs[i] = rec
	}
	// One script, one flush of its own: a batch is already a large write.
	s.commits.flush([]*write{w})
	<-w.done
	if w.err != nil {
		return nil, fmt.Errorf("%w: submit a batch of %d: %w", ErrUnavailable, len(recs), w.err)
	}
	out := make([]Result, len(recs))
	for i, rec := range recs {
		res, err := s.answer(ctx, Request{Function: fn.Name, Event: req.Events[i], Source: req.Source, Fingerprint: req.Fingerprint}, rec, w.results[i])
		if err != nil {
			return nil, err
		}
		out[i] = res
	}
	return out, nil
}

// answer turns the Submit script's result for rec into Submit's.
func (s *Submitter) answer(ctx context.Context, req Request, rec *record.Record, result int64) (Result, error) {
	if result == 1 || result == 2 {
		// 2: recorded, and a task with its id was there (a sender's
		// retry after a lost answer in an older version): a live one
		// runs it, a dead one is replaced by the orphan sweeper.
		if s.metrics != nil {
			s.metrics.EventsIn.WithLabelValues(req.Source, rec.FunctionName).Inc()
		}
		return Result{Record: rec}, nil
	}
	// The invocation exists (often this very write: an earlier send of
	// it landed before its connection broke), so ErrUnavailable — "not
	// queued" — would be untrue: Redis answered a moment ago, and its
	// record is waited for as long as an uncertain write is.
	existing, err := s.existing(ctx, rec.RequestId)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if req.Fingerprint != "" && existing.Fingerprint != "" && req.Fingerprint != existing.Fingerprint {
		return Result{Record: existing}, fmt.Errorf("%w: %s", ErrKeyReused, rec.RequestId)
	}
	// A record from before the script wrote both (or a redriven one):
	// make sure its task exists (asynq refuses a second with one ID). If
	// Redis went away again, the orphan sweeper queues it (Sweeper): the
	// invocation is durable either way, so that is no reason to refuse.
	if existing.Status == record.Pending {
		_ = s.Requeue(ctx, rec.RequestId, existing.FunctionName, existing.Attempt, 0)
	}
	return Result{Record: existing, Duplicate: true}, nil
}

// existing reads the record of an invocation known to exist, retrying
// while Redis cannot be reached, up to the committer's uncertainWait.
func (s *Submitter) existing(ctx context.Context, id string) (*record.Record, error) {
	start := time.Now()
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, 250*time.Millisecond) {
		rec, err := s.records.Get(ctx, id)
		if err == nil || errors.Is(err, record.ErrNotFound) || time.Since(start)+delay >= s.commits.uncertainWait {
			return rec, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
	}
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
	return s.room(cfg, fn)
}

// room is EventRoom for fn of cfg, cached per function (a reload's
// functions are new values, so a changed env is measured again).
func (s *Submitter) room(cfg *config.Config, fn *config.Function) int {
	if n, ok := s.rooms.Load(fn); ok {
		return n.(int)
	}
	n := eventRoom(cfg, fn)
	s.rooms.Store(fn, n)
	return n
}

// roomID stands for a RequestId when measuring room (a UUID's length).
const roomID = "00000000-0000-0000-0000-000000000000"

func eventRoom(cfg *config.Config, fn *config.Function) int {
	env := jobenv.Build(nil, fn.Env, jobenv.Builtins{
		FunctionName: fn.Name, Region: cfg.Region, AppID: cfg.AppID, UIN: cfg.UIN,
		RequestID: roomID, Attempt: 99,
	}, nil)
	total := 0
	for _, kv := range env {
		total += len(kv) + 1
	}
	if fn.EventsByFile() {
		return fn.MaxEventBytes() // the environment holds a stub
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
