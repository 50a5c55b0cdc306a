package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
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
	prefix := cfg.Redis.Prefix

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
