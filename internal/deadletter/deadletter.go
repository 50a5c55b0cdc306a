// Package deadletter keeps the events jobgate gave up on: those whose
// retries or age ran out, and those that can never run (bad image,
// unfit environment). Entries are modelled on SCF's dead-letter message
// and stay until they are redriven or deleted, or fall out of the list's
// bounds (Limits): with Redis's noeviction policy an unbounded list would
// in the end stop every write.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
)

// ErrNotFound: no dead letter with that RequestId.
var ErrNotFound = errors.New("dead letter not found")

// Body is SCF's DLQ message body (the async event envelope).
type Body struct {
	FunctionName  string
	Namespace     string
	Qualifier     string
	RequestSource string
	ClientContext string // the event JSON, as a string
	PushTime      string // when the event was first queued
	RetryNum      int    // re-runs after failed exits
}

// Entry is one dead letter.
type Entry struct {
	RequestId    string
	ErrorCode    int // the SCF status code of the last failure
	ErrorMessage string
	Body         Body
	DeadTime     string // when it was dead-lettered
	Attempt      int    // attempts made
}

// Limits bound the list.
type Limits struct {
	Retention time.Duration // an entry expires this long after it was added
	Max       int           // entries per function; the oldest are dropped first
	// Dropped, if set, hears of every entry that left the list through a
	// bound: reason "retention" (n entries found expired) or "max".
	Dropped func(function, reason string, ids []string, n int)
	Now     func() time.Time // nil: time.Now
}

// Store keeps dead letters in Redis.
type Store struct {
	rdb    redis.UniversalClient
	keys   keyspace.Keys
	limits Limits
}

// NewStore returns a Store within limits.
func NewStore(rdb redis.UniversalClient, prefix string, limits Limits) *Store {
	if limits.Now == nil {
		limits.Now = time.Now
	}
	return &Store{rdb: rdb, keys: keyspace.New(prefix), limits: limits}
}

func member(t time.Time, id string) string { return fmt.Sprintf("%019d:%s", t.UnixNano(), id) }

// Add stores e (replacing an earlier entry for the same RequestId),
// keeping the list within its limits.
func (s *Store) Add(ctx context.Context, e Entry) error {
	now := s.limits.Now().UTC()
	if e.DeadTime == "" {
		e.DeadTime = now.Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("dead letter %s: %w", e.RequestId, err)
	}
	fn := e.Body.FunctionName
	// The member is kept in the entry's key so Delete can find it.
	res, err := keyspace.DeadLetterAdd.Run(ctx, s.rdb,
		[]string{s.keys.DeadLetter(e.RequestId), s.keys.DeadLetters(), s.keys.DeadLetterIndex(fn)},
		b, member(now, e.RequestId), s.limits.Retention.Milliseconds(), member(now.Add(-s.limits.Retention), ""),
		s.limits.Max, fn, s.keys.DeadLetterPrefix()).Slice()
	if err != nil {
		return fmt.Errorf("dead letter %s: %w", e.RequestId, err)
	}
	if s.limits.Dropped != nil && len(res) == 2 {
		if n, _ := res[0].(int64); n > 0 {
			s.limits.Dropped(fn, "retention", nil, int(n))
		}
		if ids, _ := res[1].([]any); len(ids) > 0 {
			evicted := make([]string, len(ids))
			for i, id := range ids {
				evicted[i], _ = id.(string)
			}
			s.limits.Dropped(fn, "max", evicted, len(evicted))
		}
	}
	return nil
}

// Get returns one entry.
func (s *Store) Get(ctx context.Context, id string) (*Entry, error) {
	raw, err := s.rdb.HGet(ctx, s.keys.DeadLetter(id), "entry").Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter %s: %w", id, err)
	}
	var e Entry
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return nil, fmt.Errorf("dead letter %s: %w", id, err)
	}
	return &e, nil
}

// Delete removes an entry.
func (s *Store) Delete(ctx context.Context, id string) error {
	v, err := s.rdb.HMGet(ctx, s.keys.DeadLetter(id), "member", "function").Result()
	if err != nil {
		return fmt.Errorf("delete dead letter %s: %w", id, err)
	}
	m, _ := v[0].(string)
	fn, _ := v[1].(string)
	if m == "" {
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.keys.DeadLetter(id))
		p.ZRem(ctx, s.keys.DeadLetters(), m)
		p.ZRem(ctx, s.keys.DeadLetterIndex(fn), m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete dead letter %s: %w", id, err)
	}
	return nil
}

// List returns entries newest first; cursor as in record.Store.List.
func (s *Store) List(ctx context.Context, limit int, cursor string) ([]*Entry, string, error) {
	start := "+"
	if cursor != "" {
		start = "(" + cursor
	}
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.keys.DeadLetters(), Start: start, Stop: "-", ByLex: true, Rev: true, Count: int64(limit + 1)}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list dead letters: %w", err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = members[limit-1]
	}
	out := make([]*Entry, 0, len(members))
	for _, m := range members {
		_, id, _ := strings.Cut(m, ":")
		e, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, e)
	}
	return out, next, nil
}
