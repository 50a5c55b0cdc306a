package record_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

func newStore(t *testing.T) *record.Store {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return record.NewStore(rdb, "jg", time.Hour)
}

func rec(id, fn string, at time.Time) *record.Record {
	return &record.Record{RequestId: id, FunctionName: fn, Status: record.Pending, StatusCode: 202, Attempt: 1,
		EnqueueTime: at.UTC().Format(record.TimeFormat)}
}

func TestCreateIsOnceAndUpdateNeverLeavesTerminal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	r := rec("a", "f", time.Now())
	created, _, err := s.Create(ctx, r, []byte(`{"e":1}`))
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	created, existing, err := s.Create(ctx, rec("a", "f", time.Now()), []byte(`{"e":2}`))
	if err != nil || created || existing.RequestId != "a" {
		t.Fatalf("second create: %v %+v %v", created, existing, err)
	}
	if ev, _ := s.Event(ctx, "a"); string(ev) != `{"e":1}` {
		t.Fatalf("event replaced: %s", ev)
	}
	if err := s.Update(ctx, "a", record.Update{Status: record.Finished, StatusCode: record.Ptr(200), ExitCode: record.Ptr(0)}); err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, "a", record.Update{Status: record.Failed})
	if !errors.Is(err, record.ErrTerminal) {
		t.Fatalf("update after end: %v", err)
	}
	got, _ := s.Get(ctx, "a")
	if got.Status != record.Finished || got.ExitCode == nil || *got.ExitCode != 0 {
		t.Fatalf("%+v", got)
	}
	if err := s.Update(ctx, "nope", record.Update{Status: record.Running}); !errors.Is(err, record.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
}

func TestListIsNewestFirstWithStableCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	base := time.Now()
	for i := 0; i < 250; i++ {
		fn := "even"
		if i%2 == 1 {
			fn = "odd"
		}
		if _, _, err := s.Create(ctx, rec(fmt.Sprintf("id-%03d", i), fn, base.Add(time.Duration(i)*time.Millisecond)), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Page through odd ones 7 at a time while new records keep arriving.
	var got []string
	cursor := ""
	for i := 0; ; i++ {
		page, next, err := s.List(ctx, record.Filter{Function: "odd"}, 7, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			got = append(got, r.RequestId)
		}
		if i == 0 { // a newer record must not shift later pages
			_, _, _ = s.Create(ctx, rec("late", "odd", base.Add(time.Hour)), []byte(`{}`))
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != 125 || got[0] != "id-249" || got[124] != "id-001" {
		t.Fatalf("got %d: first %s last %s", len(got), got[0], got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] >= got[i-1] {
			t.Fatalf("order broken at %d: %s then %s", i, got[i-1], got[i])
		}
	}
	_ = s.Update(ctx, "id-100", record.Update{Status: record.Running})
	page, next, err := s.List(ctx, record.Filter{Status: record.Running}, 10, "")
	if err != nil || len(page) != 1 || page[0].RequestId != "id-100" || next != "" {
		t.Fatalf("status filter: %v %q %v", page, next, err)
	}
}

func TestWatcherWakesOnChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	w, err := s.NewWatcher(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, _, err := s.Create(ctx, rec("w", "f", time.Now()), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = s.Update(ctx, "w", record.Update{Status: record.Running})
	}()
	wctx, cancel := context.WithTimeout(ctx, time.Second) // well under the 2 s fallback poll
	defer cancel()
	got, err := w.Wait(wctx, "w", func(r *record.Record) bool { return r.Status == record.Running })
	if err != nil || got.Status != record.Running {
		t.Fatalf("wait: %+v %v", got, err)
	}
}
