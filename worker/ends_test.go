package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// A Redis failover can drop an end the old master acknowledged, leaving
// the record RUNNING with no instance anywhere (found by the fleet
// suite). The worker that ran it records the end again from memory; one
// that has no memory of it (restarted since) ends it as NodeLost.
func TestLostEndIsRecordedAgain(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	zero := 0
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t), Args: []string{"exit", "3"}, Retry: config.Retry{Max: &zero}})
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	ctx := context.Background()
	rdb := st.Node.Redis()
	prefix := cfg.Redis.KeyPrefix()

	// What the failover leaves: the record as it was while RUNNING.
	lose := func(id string, attempt int) {
		if err := rdb.HSet(ctx, prefix+":inv:"+id, "Status", string(record.Running), "StatusCode", record.CodeRunning,
			"Node", cfg.Worker.Node, "Attempt", attempt).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HDel(ctx, prefix+":inv:"+id, "EndTime", "ExitCode").Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.SAdd(ctx, prefix+":running", id).Err(); err != nil {
			t.Fatal(err)
		}
	}

	ran := st.WaitEnd(t, st.Invoke(t, "fn", "", []byte(`{}`), 200).RequestId, time.Minute)
	if ran.Status != record.Failed || ran.ExitCode == nil || *ran.ExitCode != 3 {
		t.Fatalf("first end: %+v", ran)
	}
	lose(ran.RequestId, 1)
	again := waitStatus(t, st, ran.RequestId)
	if again.Status != record.Failed || again.ExitCode == nil || *again.ExitCode != 3 || again.Attempt != 1 {
		t.Fatalf("the end recorded again: %+v, want the remembered FAILED exit 3", again)
	}

	// An attempt this worker does not remember (its attempt 2 never ran
	// here): ended as NodeLost.
	other := st.WaitEnd(t, st.Invoke(t, "fn", "", []byte(`{}`), 200).RequestId, time.Minute)
	lose(other.RequestId, 2)
	lost := waitStatus(t, st, other.RequestId)
	if lost.Status != record.Failed || lost.StatusCode != record.CodeNodeLost {
		t.Fatalf("an unremembered RUNNING record: %+v, want FAILED NodeLost", lost)
	}
	if n, err := rdb.SIsMember(ctx, prefix+":running", other.RequestId).Result(); err != nil || n {
		t.Fatalf("still in the running set: %v %v", n, err)
	}
}

// waitStatus waits until id's record is terminal again.
func waitStatus(t *testing.T, st *testenv.Stack, id string) *record.Record {
	t.Helper()
	var rec *record.Record
	testenv.Eventually(t, time.Minute, "the record to end again", func() bool {
		r, err := st.Records.Get(context.Background(), id)
		rec = r
		return err == nil && r.Status.Terminal()
	})
	return rec
}

// A node lost while it was scheduling an attempt (it holds the start
// claim; the record is SCHEDULING on it) does not block the attempt for
// the claim's 10 minutes: the lost-node sweeper releases it, and a live
// worker runs it (found by the fleet suite's partition).
func TestAttemptOfANodeLostWhileSchedulingIsReleased(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran"}})
	cfg.Worker.LeaseS, cfg.Worker.NodeLostS = 6, 1
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	ctx := context.Background()
	rdb, prefix := st.Node.Redis(), cfg.Redis.KeyPrefix()
	id := submit.DeriveRequestID("idempotency-key", "fn", "lost-while-scheduling")
	// The ghost node took the start claim, then vanished mid-schedule.
	if err := rdb.Set(ctx, prefix+":claim:"+record.InstanceID(id, 1), "ghost", 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if code, body := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=none", []byte(`{}`), map[string]string{"Idempotency-Key": "lost-while-scheduling"}); code != 202 {
		t.Fatalf("invoke: %d %s", code, body)
	}
	if err := rdb.HSet(ctx, prefix+":inv:"+id, "Status", string(record.Scheduling), "Node", "ghost").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.SAdd(ctx, prefix+":running", id).Err(); err != nil {
		t.Fatal(err)
	}
	end := st.WaitEnd(t, id, 2*time.Minute)
	if end.Status != record.Finished || end.Node != cfg.Worker.Node {
		t.Fatalf("%+v, want FINISHED on %s", end, cfg.Worker.Node)
	}
}

// An attempt whose scheduling on this node was cut short (Redis went
// away before it could be put back to PENDING, and a failover lost its
// task) stays SCHEDULING with no delivery to finish it: the worker puts
// it back to PENDING, and the orphan sweeper queues it again.
func TestInterruptedSchedulingIsQueuedAgain(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran"}})
	cfg.Submit.OrphanS = 1
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	ctx := context.Background()
	rdb, prefix := st.Node.Redis(), cfg.Redis.KeyPrefix()
	const id = "cut-short-1"
	r := &record.Record{RequestId: id, FunctionName: "fn", Status: record.Pending, StatusCode: record.CodeRunning, Attempt: 1,
		EnqueueTime: time.Now().UTC().Format(record.TimeFormat)}
	if created, _, err := st.Records.Create(ctx, r, []byte(`{}`)); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	// What the cut-short scheduling left: SCHEDULING here, the claim
	// held, no task.
	node := cfg.Worker.Node
	if err := st.Records.Update(ctx, id, record.Update{Status: record.Scheduling, Node: &node}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, prefix+":claim:"+record.InstanceID(id, 1), node, 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	end := st.WaitEnd(t, id, 2*time.Minute)
	if end.Status != record.Finished {
		t.Fatalf("%+v, want FINISHED", end)
	}
}
