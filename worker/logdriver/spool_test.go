package logdriver_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/worker/logdriver"
)

// Output still unwritten when the shim stops the driver (its task was
// deleted) while Redis is down is spooled to disk, and the worker's replay
// puts it into the log store once Redis is back: nothing is dropped.
func TestLinesSpooledWhileRedisIsDownAreReplayed(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	store := logstore.NewStore(rdb, "jg", time.Hour, 1<<20)
	srv.Kill()

	lines := make(chan logstore.Line, 3)
	for _, l := range []string{"first", "second ✓", "third"} {
		lines <- logstore.Line{TS: time.Now().UTC(), Stream: logstore.Stdout, Line: l}
	}
	close(lines)
	stopped, stop := context.WithCancel(context.Background())
	stop() // the shim's SIGTERM
	spool := logdriver.SpoolDir(t.TempDir())
	if err := logdriver.Ship(stopped, store, spool, func() string { return "inv-1" }, lines); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(spool, "inv-1.jsonl")); err != nil {
		t.Fatalf("nothing spooled: %v", err)
	}

	srv.Restart(t)
	n, err := logdriver.ReplaySpool(context.Background(), store, spool)
	if err != nil || n != 3 {
		t.Fatalf("replayed %d lines, err %v; want 3", n, err)
	}
	got, _, err := store.Lines(context.Background(), "inv-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Line != "first" || got[1].Line != "second ✓" || got[2].Line != "third" {
		t.Fatalf("log after replay: %+v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "*")); len(left) != 0 {
		t.Fatalf("spool not emptied: %v", left)
	}
}
