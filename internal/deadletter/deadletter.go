// Package deadletter keeps the events jobgate gave up on: those whose
// retries or age ran out, and those that can never run (bad image,
// unfit environment). Entries are modelled on SCF's dead-letter message
// and stay until they are redriven or deleted.
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

// Store keeps dead letters in Redis.
type Store struct {
	rdb  redis.UniversalClient
	keys keyspace.Keys
}

// NewStore returns a Store.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, keys: keyspace.New(prefix)}
}

func member(t time.Time, id string) string { return fmt.Sprintf("%019d:%s", t.UnixNano(), id) }

// Add stores e (replacing an earlier entry for the same RequestId).
func (s *Store) Add(ctx context.Context, e Entry) error {
	now := time.Now().UTC()
	if e.DeadTime == "" {
		e.DeadTime = now.Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("dead letter %s: %w", e.RequestId, err)
	}
	// The member is kept in the entry's key so Delete can find it.
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		old := s.rdb.HGet(ctx, s.keys.DeadLetter(e.RequestId), "member").Val()
		if old != "" {
			p.ZRem(ctx, s.keys.DeadLetters(), old)
		}
		m := member(now, e.RequestId)
		p.HSet(ctx, s.keys.DeadLetter(e.RequestId), "entry", b, "member", m)
		p.ZAdd(ctx, s.keys.DeadLetters(), redis.Z{Score: 0, Member: m})
		return nil
	})
	if err != nil {
		return fmt.Errorf("dead letter %s: %w", e.RequestId, err)
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
	m, err := s.rdb.HGet(ctx, s.keys.DeadLetter(id), "member").Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("delete dead letter %s: %w", id, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.keys.DeadLetter(id))
		p.ZRem(ctx, s.keys.DeadLetters(), m)
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
