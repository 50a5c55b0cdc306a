// Package logstore keeps each invocation's log in Redis: a list of NDJSON
// lines {"ts","stream","line"} with a byte cap, a truncation marker, and a
// "done" flag set once the platform's END/Report lines are written.
package logstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
)

// Streams of a log line.
const (
	Stdout   = "stdout"
	Stderr   = "stderr"
	Platform = "platform" // START, END, Report and jobgate's own notes
)

// Line is one log line.
type Line struct {
	TS     time.Time `json:"ts"`
	Stream string    `json:"stream"`
	Line   string    `json:"line"`
	// Partial marks every piece but the last of an output line too long
	// for one record (as Docker's log drivers do); pieces are cut on
	// UTF-8 character boundaries, so joining them gives the line back.
	Partial bool `json:"partial,omitempty"`
}

// Store reads and writes logs.
type Store struct {
	rdb       redis.UniversalClient
	keys      keyspace.Keys
	retention time.Duration
	maxBytes  int64
}

// NewStore returns a Store. Lines past maxBytes per invocation (counted as
// stored) are dropped after one truncation marker; platform lines are
// always kept.
func NewStore(rdb redis.UniversalClient, prefix string, retention time.Duration, maxBytes int64) *Store {
	return &Store{rdb: rdb, keys: keyspace.New(prefix), retention: retention, maxBytes: maxBytes}
}

// Append adds job output lines, within the cap.
func (s *Store) Append(ctx context.Context, id string, lines []Line) error {
	return s.append(ctx, id, lines, false, false)
}

// AppendPlatform adds platform lines regardless of the cap; done marks the
// log complete (no more lines will come).
func (s *Store) AppendPlatform(ctx context.Context, id string, done bool, lines ...string) error {
	now := time.Now()
	ls := make([]Line, len(lines))
	for i, l := range lines {
		ls[i] = Line{TS: now, Stream: Platform, Line: l}
	}
	return s.append(ctx, id, ls, true, done)
}

func (s *Store) append(ctx context.Context, id string, lines []Line, force, done bool) error {
	args := []any{s.retention.Milliseconds(), s.maxBytes, flag(force), flag(done)}
	for _, l := range lines {
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("log %s: %w", id, err)
		}
		args = append(args, b)
	}
	if err := keyspace.LogAppend.Run(ctx, s.rdb, []string{s.keys.Log(id), s.keys.LogMeta(id)}, args...).Err(); err != nil {
		return fmt.Errorf("append log %s: %w", id, err)
	}
	return nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Range returns the raw NDJSON lines from index from on, and whether the
// log is complete.
func (s *Store) Range(ctx context.Context, id string, from int64) (lines []string, done bool, err error) {
	var lr *redis.StringSliceCmd
	var dn *redis.StringCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		dn = p.HGet(ctx, s.keys.LogMeta(id), "done")
		lr = p.LRange(ctx, s.keys.Log(id), from, -1)
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, false, fmt.Errorf("read log %s: %w", id, err)
	}
	d, _ := strconv.ParseBool(dn.Val())
	return lr.Val(), d, nil
}

// Lines decodes the whole log (for tests and the CLI).
func (s *Store) Lines(ctx context.Context, id string) ([]Line, bool, error) {
	raw, done, err := s.Range(ctx, id, 0)
	if err != nil {
		return nil, false, err
	}
	out := make([]Line, 0, len(raw))
	for _, r := range raw {
		var l Line
		if err := json.Unmarshal([]byte(r), &l); err != nil {
			return nil, false, fmt.Errorf("log %s: bad line %q: %w", id, r, err)
		}
		out = append(out, l)
	}
	return out, done, nil
}
