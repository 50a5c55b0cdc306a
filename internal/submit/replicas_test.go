package submit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/redisconn"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// redis.wait_replicas over a real Sentinel group: with the replica up a
// submission is confirmed by it before it is answered; with the replica
// down it is refused (ErrUnavailable, ErrNotReplicated) and taken back
// before any worker could take it (its task is held as scheduled until
// confirmed), so nothing of it is queued; single and keyed (scripted)
// writes alike.
func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	g := testenv.StartSentinelGroup(t)
	cfg := &config.Config{Worker: config.Worker{Node: "n"}, Functions: []config.Function{{Name: "fn", Image: "r/fn:1"}},
		Redis: config.Redis{Sentinel: &config.RedisSentinel{Master: testenv.SentinelMaster, Addrs: g.SentinelAddrs()},
			WaitReplicas: 1, WaitTimeoutMs: 300}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	target := redisconn.Resolve(cfg.Redis)
	rdb, err := target.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	commit, err := target.Client(redisconn.NoRetries)
	if err != nil {
		t.Fatal(err)
	}
	records := record.NewStore(rdb, cfg.Redis.KeyPrefix(), cfg.Retention())
	sub := submit.New(cfg, rdb, records, asynq.NewClientFromRedisClient(rdb)).WithCommitClient(commit)
	t.Cleanup(func() { sub.Close() })
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx := context.Background()

	replica := redis.NewClient(&redis.Options{Addr: g.Nodes[1].Addr})
	defer replica.Close()
	for i, req := range []submit.Request{
		{Function: "fn", Event: []byte(`{"n":1}`)},
		{Function: "fn", Event: []byte(`{"n":2}`), RequestID: "keyed-1"},
	} {
		res, err := sub.Submit(ctx, req)
		if err != nil {
			t.Fatalf("submission %d with the replica up: %v", i, err)
		}
		// Answered only after the replica had it; its task was held back
		// (scheduled) until then and is pending now.
		if n, err := replica.Exists(ctx, cfg.Redis.KeyPrefix()+":inv:"+res.Record.RequestId).Result(); err != nil || n != 1 {
			t.Fatalf("submission %d answered before the replica had it: %d %v", i, n, err)
		}
		if q, err := insp.GetQueueInfo("jobgate"); err != nil || q.Pending != i+1 || q.Scheduled != 0 {
			t.Fatalf("after submission %d: %+v %v, want its task pending", i, q, err)
		}
	}

	g.Nodes[1].Kill()
	var refused []string
	for i, id := range []string{"", "keyed-2"} {
		_, err := sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(fmt.Sprintf(`{"n":%d}`, 3+i)), RequestID: id})
		if !errors.Is(err, submit.ErrUnavailable) || !errors.Is(err, submit.ErrNotReplicated) {
			t.Fatalf("submission with the replica down: %v, want ErrUnavailable and ErrNotReplicated", err)
		}
		refused = append(refused, id)
	}
	// Taken back: of the refused, nothing stays queued or recorded.
	testenv.Eventually(t, 10*time.Second, "the refused submissions to be taken back", func() bool {
		q, err := insp.GetQueueInfo("jobgate")
		return err == nil && q.Pending == 2 && q.Scheduled == 0
	})
	if _, err := records.Get(ctx, refused[1]); err == nil {
		t.Fatal("the refused keyed submission has a record")
	}
	list, _, err := records.List(ctx, record.Filter{}, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("%d records listed, want the 2 confirmed", len(list))
	}

	g.Nodes[1].Start(t)
	g.WaitSynced(t, 30*time.Second)
	if _, err := sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{"n":5}`), RequestID: "keyed-2"}); err != nil {
		t.Fatalf("the refused submission sent again with the replica back: %v", err)
	}
}
