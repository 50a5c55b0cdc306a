package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// drops records what the store reported dropping.
type drops struct {
	mu   sync.Mutex
	byFn map[string]int
	ids  []string
}

func (d *drops) add(fn, reason string, ids []string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byFn[fn+"/"+reason] += n
	d.ids = append(d.ids, ids...)
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newStore(t *testing.T, max int, retention time.Duration) (*deadletter.Store, *redis.Client, *drops, *clock) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	d := &drops{byFn: map[string]int{}}
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return deadletter.NewStore(rdb, "jg", deadletter.Limits{Retention: retention, Max: max, Dropped: d.add, Now: c.now}), rdb, d, c
}

func entry(fn string, i int) deadletter.Entry {
	return deadletter.Entry{RequestId: fmt.Sprintf("%s-%d", fn, i), ErrorCode: 439, Body: deadletter.Body{FunctionName: fn}}
}

// A function keeps at most max dead letters: the oldest go first, are
// reported, and other functions keep theirs.
func TestMaxPerFunctionDropsTheOldest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, d, c := newStore(t, 3, time.Hour)
	for i := 0; i < 5; i++ {
		c.t = c.t.Add(time.Second)
		if err := s.Add(ctx, entry("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := s.Add(ctx, entry("b", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		_, err := s.Get(ctx, fmt.Sprintf("a-%d", i))
		if gone := errors.Is(err, deadletter.ErrNotFound); gone != (i < 2) {
			t.Fatalf("a-%d: %v (the two oldest must be gone, the rest kept)", i, err)
		}
	}
	list, _, err := s.List(ctx, 100, "")
	if err != nil || len(list) != 5 {
		t.Fatalf("list: %d entries, %v; want 3 of a and 2 of b", len(list), err)
	}
	sort.Strings(d.ids)
	if d.byFn["a/max"] != 2 || d.byFn["b/max"] != 0 || len(d.ids) != 2 || d.ids[0] != "a-0" || d.ids[1] != "a-1" {
		t.Fatalf("reported drops %v %v", d.byFn, d.ids)
	}
}

// Entries expire after the retention (a TTL on each), and the indexes
// lose their members once past it.
func TestRetentionExpiresAndTrims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb, d, c := newStore(t, 100, time.Hour)
	keys := keyspace.New("jg")
	if err := s.Add(ctx, entry("a", 0)); err != nil {
		t.Fatal(err)
	}
	ttl, err := rdb.PTTL(ctx, keys.DeadLetter("a-0")).Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("entry TTL %s (%v), want about the hour's retention", ttl, err)
	}
	c.t = c.t.Add(time.Hour + time.Second)
	if err := s.Add(ctx, entry("a", 1)); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []string{keys.DeadLetters(), keys.DeadLetterIndex("a")} {
		if n, _ := rdb.ZCard(ctx, idx).Result(); n != 1 {
			t.Fatalf("%s holds %d members after the retention, want 1", idx, n)
		}
	}
	if d.byFn["a/retention"] != 1 {
		t.Fatalf("reported drops %v", d.byFn)
	}
}

// Delete takes an entry out of both indexes; adding the same id again
// replaces it.
func TestDeleteAndReplace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, rdb, _, _ := newStore(t, 100, time.Hour)
	keys := keyspace.New("jg")
	for i := 0; i < 2; i++ {
		if err := s.Add(ctx, entry("a", 0)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := rdb.ZCard(ctx, keys.DeadLetterIndex("a")).Result(); n != 1 {
		t.Fatalf("re-adding the same id left %d members", n)
	}
	if err := s.Delete(ctx, "a-0"); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []string{keys.DeadLetters(), keys.DeadLetterIndex("a")} {
		if n, _ := rdb.ZCard(ctx, idx).Result(); n != 0 {
			t.Fatalf("%s holds %d members after Delete", idx, n)
		}
	}
	if err := s.Delete(ctx, "a-0"); !errors.Is(err, deadletter.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
