package logstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

func TestCapTruncatesOnceButKeepsPlatformLines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	defer rdb.Close()
	s := logstore.NewStore(rdb, "jg", time.Hour, 1000)
	var lines []logstore.Line
	for i := 0; i < 50; i++ {
		lines = append(lines, logstore.Line{TS: time.Now(), Stream: logstore.Stdout, Line: strings.Repeat("x", 40)})
	}
	if err := s.Append(ctx, "id", lines[:20]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, "id", lines[20:]); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendPlatform(ctx, "id", true, "END RequestId:id"); err != nil {
		t.Fatal(err)
	}
	got, done, err := s.Lines(ctx, "id")
	if err != nil || !done {
		t.Fatalf("done=%v err=%v", done, err)
	}
	stdout, markers := 0, 0
	for _, l := range got {
		switch {
		case l.Stream == logstore.Stdout:
			stdout++
		case strings.Contains(l.Line, "log truncated at 1000 bytes"):
			markers++
		}
	}
	// Each stored line is ~80 bytes of JSON: about a dozen fit in 1000.
	if stdout < 5 || stdout >= 20 || markers != 1 || got[len(got)-1].Line != "END RequestId:id" {
		t.Fatalf("stdout=%d markers=%d last=%+v", stdout, markers, got[len(got)-1])
	}
}
