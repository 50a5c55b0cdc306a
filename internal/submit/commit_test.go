package submit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
)

// pipelines counts the round trips that carry pipelines.
type pipelines struct{ n atomic.Int64 }

func (p *pipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *pipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (p *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.n.Add(1)
		return next(ctx, cmds)
	}
}

// Concurrent submissions share round trips (group commit), and each is
// recorded and queued exactly as alone.
func TestConcurrentSubmissionsShareRoundTrips(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	hook := &pipelines{}
	f.rdb.AddHook(hook)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := f.sub.Submit(context.Background(), submit.Request{Function: "fn", Event: []byte(`{}`), RequestID: fmt.Sprintf("id-%d", i)})
			if err == nil && (res.Duplicate || res.Record.Status != record.Pending) {
				err = fmt.Errorf("%d: %+v", i, res)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q, err := f.insp.GetQueueInfo("jobgate"); err != nil || q.Pending != n {
		t.Fatalf("queue %+v %v", q, err)
	}
	if trips := hook.n.Load(); trips >= n {
		t.Fatalf("%d submissions took %d round trips", n, trips)
	} else {
		t.Logf("%d submissions in %d round trips", n, trips)
	}
}
