package record

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors returned by Store.
var (
	ErrNotFound = errors.New("invocation not found")
	// ErrTerminal means the record already has a final status, which is
	// never overwritten: an invocation ends exactly once.
	ErrTerminal = errors.New("invocation already ended")
)

// Store keeps records in Redis under a key prefix.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
}

// NewStore returns a Store; records and their events expire after
// retention.
func NewStore(rdb redis.UniversalClient, prefix string, retention time.Duration) *Store {
	return &Store{rdb: rdb, prefix: prefix, retention: retention}
}

func (s *Store) recKey(id string) string   { return s.prefix + ":inv:" + id }
func (s *Store) eventKey(id string) string { return s.prefix + ":inv:" + id + ":event" }
func (s *Store) idxKey(fn string) string {
	if fn == "" {
		return s.prefix + ":idx"
	}
	return s.prefix + ":idx:fn:" + fn
}
func (s *Store) channel() string { return s.prefix + ":changes" }

// indexMember orders entries by enqueue time, then id; ZRANGE BYLEX over
// it gives a stable newest-first cursor.
func indexMember(t time.Time, id string) string { return fmt.Sprintf("%019d:%s", t.UnixNano(), id) }

var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[1])
for i = 3, 4 do
  redis.call('ZADD', KEYS[i], 0, ARGV[2])
  redis.call('ZREMRANGEBYLEX', KEYS[i], '-', '(' .. ARGV[3])
end
return 1`)

// Create stores a new PENDING record and its event. If a record with the
// same RequestId exists, it returns that one and created=false.
func (s *Store) Create(ctx context.Context, r *Record, event []byte) (created bool, existing *Record, err error) {
	enq, err := time.Parse(TimeFormat, r.EnqueueTime)
	if err != nil {
		return false, nil, fmt.Errorf("record %s: bad EnqueueTime: %w", r.RequestId, err)
	}
	args := []any{s.retention.Milliseconds(), indexMember(enq, r.RequestId),
		indexMember(time.Now().Add(-s.retention), ""), event}
	for k, v := range r.fields() {
		args = append(args, k, v)
	}
	n, err := createScript.Run(ctx, s.rdb,
		[]string{s.recKey(r.RequestId), s.eventKey(r.RequestId), s.idxKey(""), s.idxKey(r.FunctionName)}, args...).Int()
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

// Delete removes a record that was never queued (enqueue failed), so that
// a retry by the sender starts afresh.
func (s *Store) Delete(ctx context.Context, r *Record) error {
	enq, _ := time.Parse(TimeFormat, r.EnqueueTime)
	m := indexMember(enq, r.RequestId)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.recKey(r.RequestId), s.eventKey(r.RequestId))
		p.ZRem(ctx, s.idxKey(""), m)
		p.ZRem(ctx, s.idxKey(r.FunctionName), m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete record %s: %w", r.RequestId, err)
	}
	return nil
}

// Get returns one record.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.recKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get record %s: %w", id, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return fromFields(m), nil
}

// Event returns the event stored with the record, byte for byte.
func (s *Store) Event(ctx context.Context, id string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.eventKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("event of %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get event %s: %w", id, err)
	}
	return b, nil
}

var updateScript = redis.NewScript(`
local s = redis.call('HGET', KEYS[1], 'Status')
if not s then return -1 end
if ARGV[3] == '0' and (s == 'FINISHED' or s == 'FAILED' or s == 'ABORTED') then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1`)

// Update applies u unless the record has already ended (ErrTerminal).
func (s *Store) Update(ctx context.Context, id string, u Update) error {
	return s.update(ctx, id, u, false)
}

func (s *Store) update(ctx context.Context, id string, u Update, allowTerminal bool) error {
	f := u.fields()
	if len(f) == 0 {
		return nil
	}
	flag := "0"
	if allowTerminal {
		flag = "1"
	}
	args := append([]any{s.channel(), id, flag}, f...)
	n, err := updateScript.Run(ctx, s.rdb, []string{s.recKey(id)}, args...).Int()
	switch {
	case err != nil:
		return fmt.Errorf("update record %s: %w", id, err)
	case n == -1:
		return fmt.Errorf("update %s: %w", id, ErrNotFound)
	case n == 0:
		return fmt.Errorf("update %s: %w", id, ErrTerminal)
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
	key := s.idxKey(f.Function)
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
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range members {
				_, id, _ := strings.Cut(m, ":")
				cmds[i] = p.HGetAll(ctx, s.recKey(id))
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
			rec := fromFields(r)
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
	ps := s.rdb.Subscribe(ctx, s.channel())
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("subscribe %s: %w", s.channel(), err)
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
