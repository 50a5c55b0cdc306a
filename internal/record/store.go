package record

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
)

// Errors returned by Store.
var (
	ErrNotFound = errors.New("invocation not found")
	// ErrTerminal means the record already has a final status, which is
	// never overwritten: an invocation ends exactly once.
	ErrTerminal = errors.New("invocation already ended")
	// ErrStatus means UpdateFrom found the record in another status.
	ErrStatus = errors.New("invocation is not in the expected status")
)

// Store keeps records in Redis under a key prefix.
type Store struct {
	rdb       redis.UniversalClient
	keys      keyspace.Keys
	retention time.Duration
	// allIndex and pending are keys every creation names, built once.
	allIndex, pending string
}

// NewStore returns a Store; records and their events expire after
// retention.
func NewStore(rdb redis.UniversalClient, prefix string, retention time.Duration) *Store {
	keys := keyspace.New(prefix)
	return &Store{rdb: rdb, keys: keys, retention: retention, allIndex: keys.Index(""), pending: keys.Pending()}
}

// IndexMember orders entries by enqueue time, then id; ZRANGE BYLEX over
// it gives a stable newest-first cursor.
func IndexMember(t time.Time, id string) string {
	b := make([]byte, 0, 20+len(id))
	var digits [20]byte
	ns := strconv.AppendInt(digits[:0], t.UnixNano(), 10)
	for range 19 - len(ns) {
		b = append(b, '0')
	}
	b = append(append(append(b, ns...), ':'), id...)
	return string(b)
}

// Create stores a new PENDING record and its event. If a record with the
// same RequestId exists, it returns that one and created=false.
func (s *Store) Create(ctx context.Context, r *Record, event []byte) (created bool, existing *Record, err error) {
	op, err := s.NewCreate(r, event)
	if err != nil {
		return false, nil, err
	}
	args := append([]any{op.TTLms, op.Member, op.Oldest, op.Event}, op.Fields...)
	n, err := keyspace.RecordCreate.Run(ctx, s.rdb, op.Keys, args...).Int()
	if err != nil {
		return false, nil, fmt.Errorf("create record %s: %w", r.RequestId, err)
	}
	if n == 1 {
		return true, nil, nil
	}
	existing, err = s.Get(ctx, r.RequestId)
	if err != nil {
		return false, nil, err
	}
	return false, existing, nil
}

// CreateOp is what creating a record writes: keyspace.RecordCreate's
// keys and arguments, also the record half of keyspace.Submit.
type CreateOp struct {
	Keys           []string // record, event, index, function index, pending set
	TTLms          int64
	Member, Oldest string // index member, oldest member kept
	Event          []byte
	Fields         []any // field/value pairs
}

// NewCreate prepares r's creation. Fields with zero values are left
// out: a missing field reads as its zero value, and a small hash is
// stored compactly (listpack) by Redis.
func (s *Store) NewCreate(r *Record, event []byte) (CreateOp, error) {
	enq, err := time.Parse(TimeFormat, r.EnqueueTime)
	if err != nil {
		return CreateOp{}, fmt.Errorf("record %s: bad EnqueueTime: %w", r.RequestId, err)
	}
	return s.NewCreateAt(r, enq, event), nil
}

// NewCreateAt is NewCreate for a record enqueued at enq (r.EnqueueTime
// formatted), without parsing it back.
func (s *Store) NewCreateAt(r *Record, enq time.Time, event []byte) CreateOp {
	op := CreateOp{
		Keys:  []string{s.keys.Record(r.RequestId), s.keys.Event(r.RequestId), s.allIndex, s.keys.Index(r.FunctionName), s.pending},
		TTLms: s.retention.Milliseconds(), Member: IndexMember(enq, r.RequestId), Oldest: IndexMember(time.Now().Add(-s.retention), ""),
		Event: event, Fields: r.newFields(),
	}
	return op
}

// Delete removes a record that was never queued (enqueue failed), so that
// a retry by the sender starts afresh.
func (s *Store) Delete(ctx context.Context, r *Record) error {
	enq, _ := time.Parse(TimeFormat, r.EnqueueTime)
	m := IndexMember(enq, r.RequestId)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.keys.Record(r.RequestId), s.keys.Event(r.RequestId), s.keys.Attempts(r.RequestId))
		p.ZRem(ctx, s.keys.Index(""), m)
		p.ZRem(ctx, s.keys.Index(r.FunctionName), m)
		p.ZRem(ctx, s.keys.Pending(), r.RequestId)
		p.SRem(ctx, s.keys.Running(), r.RequestId)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete record %s: %w", r.RequestId, err)
	}
	return nil
}

// Get returns one record.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	var h *redis.MapStringStringCmd
	var a *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		h = p.HGetAll(ctx, s.keys.Record(id))
		a = p.LRange(ctx, s.keys.Attempts(id), 0, -1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get record %s: %w", id, err)
	}
	if len(h.Val()) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return withAttempts(fromFields(h.Val()), a.Val()), nil
}

func withAttempts(r *Record, raw []string) *Record {
	for _, js := range raw {
		var a AttemptSummary
		if json.Unmarshal([]byte(js), &a) == nil {
			r.Attempts = append(r.Attempts, a)
		}
	}
	return r
}

// Event returns the event stored with the record, byte for byte.
func (s *Store) Event(ctx context.Context, id string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.keys.Event(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("event of %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get event %s: %w", id, err)
	}
	return b, nil
}

// Update applies u unless the record has already ended (ErrTerminal).
func (s *Store) Update(ctx context.Context, id string, u Update) error {
	return s.update(ctx, id, u, "")
}

// UpdateFrom applies u only if the record's status is one of from
// (ErrStatus otherwise): compare-and-set for terminate and redrive.
func (s *Store) UpdateFrom(ctx context.Context, id string, from []Status, u Update) error {
	mode := make([]string, len(from))
	for i, st := range from {
		mode[i] = string(st)
	}
	return s.update(ctx, id, u, strings.Join(mode, ","))
}

func (s *Store) update(ctx context.Context, id string, u Update, mode string) error {
	f := u.fields()
	attempt := ""
	if u.AppendAttempt != nil {
		b, err := json.Marshal(u.AppendAttempt)
		if err != nil {
			return fmt.Errorf("update %s: %w", id, err)
		}
		attempt = string(b)
	}
	var del []any
	if u.ClearRun {
		for _, k := range runFields {
			del = append(del, k)
		}
	}
	args := append([]any{s.keys.Changes(), id, mode, attempt, len(del)}, del...)
	args = append(args, f...)
	n, err := keyspace.RecordUpdate.Run(ctx, s.rdb, []string{s.keys.Record(id), s.keys.Attempts(id), s.keys.Pending(), s.keys.Running()}, args...).Int()
	switch {
	case err != nil:
		return fmt.Errorf("update record %s: %w", id, err)
	case n == -1:
		return fmt.Errorf("update %s: %w", id, ErrNotFound)
	case n == 0 && mode == "":
		return fmt.Errorf("update %s: %w", id, ErrTerminal)
	case n == 0:
		return fmt.Errorf("update %s (expected %s): %w", id, mode, ErrStatus)
	}
	return nil
}

// SetDestination records the state of the final status's i-th delivery
// (any status: the record has ended).
func (s *Store) SetDestination(ctx context.Context, id string, i int, d DestinationStatus) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("destination of %s: %w", id, err)
	}
	n, err := keyspace.RecordUpdate.Run(ctx, s.rdb, []string{s.keys.Record(id), s.keys.Attempts(id), s.keys.Pending(), s.keys.Running()},
		s.keys.Changes(), id, "*", "", 0, destinationField(i), string(b)).Int()
	switch {
	case err != nil:
		return fmt.Errorf("destination of %s: %w", id, err)
	case n == -1:
		return fmt.Errorf("destination of %s: %w", id, ErrNotFound)
	}
	return nil
}

// Filter narrows List.
type Filter struct {
	Function string
	Status   Status
}

// List returns records newest first. cursor is "" for the first page; the
// returned cursor is "" on the last page.
func (s *Store) List(ctx context.Context, f Filter, limit int, cursor string) ([]*Record, string, error) {
	const batch = 100
	const maxScan = 10000 // bound one request's work; the cursor resumes
	key := s.keys.Index(f.Function)
	start := "+"
	if cursor != "" {
		start = "(" + cursor
	}
	var out []*Record
	scanned := 0
	for scanned < maxScan {
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: start, Stop: "-", ByLex: true, Rev: true, Count: batch}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("list invocations: %w", err)
		}
		if len(members) == 0 {
			return out, "", nil
		}
		cmds := make([]*redis.MapStringStringCmd, len(members))
		atts := make([]*redis.StringSliceCmd, len(members))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range members {
				_, id, _ := strings.Cut(m, ":")
				cmds[i] = p.HGetAll(ctx, s.keys.Record(id))
				atts[i] = p.LRange(ctx, s.keys.Attempts(id), 0, -1)
			}
			return nil
		})
		if err != nil {
			return nil, "", fmt.Errorf("list invocations: %w", err)
		}
		for i, c := range cmds {
			scanned++
			start = "(" + members[i]
			r := c.Val()
			if len(r) == 0 { // expired
				continue
			}
			rec := withAttempts(fromFields(r), atts[i].Val())
			if f.Status != "" && rec.Status != f.Status {
				continue
			}
			out = append(out, rec)
			if len(out) == limit {
				if i == len(cmds)-1 && len(members) < batch {
					return out, "", nil
				}
				return out, members[i], nil
			}
		}
		if len(members) < batch {
			return out, "", nil
		}
	}
	return out, strings.TrimPrefix(start, "("), nil
}

// Watcher lets callers wait for record changes through one shared Redis
// subscription.
type Watcher struct {
	store *Store
	mu    sync.Mutex
	subs  map[string]map[chan struct{}]struct{}
	ps    *redis.PubSub
	done  chan struct{}
}

// NewWatcher subscribes to the store's change channel.
func (s *Store) NewWatcher(ctx context.Context) (*Watcher, error) {
	ps := s.rdb.Subscribe(ctx, s.keys.Changes())
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("subscribe %s: %w", s.keys.Changes(), err)
	}
	w := &Watcher{store: s, subs: map[string]map[chan struct{}]struct{}{}, ps: ps, done: make(chan struct{})}
	go w.loop()
	return w, nil
}

func (w *Watcher) loop() {
	defer close(w.done)
	for msg := range w.ps.Channel() {
		w.mu.Lock()
		for ch := range w.subs[msg.Payload] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		w.mu.Unlock()
	}
}

// Close ends the subscription.
func (w *Watcher) Close() error {
	err := w.ps.Close()
	<-w.done
	return err
}

// Wait returns the record once until(record) is true, or the last record
// seen when ctx ends (with ctx's error).
func (w *Watcher) Wait(ctx context.Context, id string, until func(*Record) bool) (*Record, error) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.subs[id] == nil {
		w.subs[id] = map[chan struct{}]struct{}{}
	}
	w.subs[id][ch] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.subs[id], ch)
		if len(w.subs[id]) == 0 {
			delete(w.subs, id)
		}
		w.mu.Unlock()
	}()
	// A slow poll backs up the subscription, which does not survive a
	// Redis reconnect.
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	var last *Record
	for {
		r, err := w.store.Get(ctx, id)
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		if r != nil {
			last = r
			if until(r) {
				return r, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-ch:
		case <-poll.C:
		}
	}
}

// Statuses returns the status of each of ids in one round trip (an id
// without a record is left out): cheap polling of many invocations.
func (s *Store) Statuses(ctx context.Context, ids []string) (map[string]Status, error) {
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGet(ctx, s.keys.Record(id), "Status")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("statuses: %w", err)
	}
	out := make(map[string]Status, len(ids))
	for i, c := range cmds {
		if v, err := c.Result(); err == nil {
			out[ids[i]] = Status(v)
		}
	}
	return out, nil
}

// PendingSince returns up to limit invocations that have been PENDING,
// unwritten, since before the given time (oldest first).
func (s *Store) PendingSince(ctx context.Context, before time.Time, limit int) ([]string, error) {
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.keys.Pending(), Start: "-inf",
		Stop: strconv.FormatInt(before.UnixMilli(), 10), ByScore: true, Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("pending invocations: %w", err)
	}
	return ids, nil
}

// TouchPending marks id as seen PENDING now (it has a live task), or
// forgets it if it has no record or is no longer PENDING.
func (s *Store) TouchPending(ctx context.Context, id string, now time.Time, still bool) error {
	var err error
	if still {
		err = s.rdb.ZAddXX(ctx, s.keys.Pending(), redis.Z{Score: float64(now.UnixMilli()), Member: id}).Err()
	} else {
		err = s.rdb.ZRem(ctx, s.keys.Pending(), id).Err()
	}
	if err != nil {
		return fmt.Errorf("pending set %s: %w", id, err)
	}
	return nil
}

// Running returns the invocations recorded RUNNING.
func (s *Store) Running(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, s.keys.Running()).Result()
	if err != nil {
		return nil, fmt.Errorf("running invocations: %w", err)
	}
	return ids, nil
}

// ForgetRunning drops id from the running set (its record is gone).
func (s *Store) ForgetRunning(ctx context.Context, id string) error {
	return s.rdb.SRem(ctx, s.keys.Running(), id).Err()
}
