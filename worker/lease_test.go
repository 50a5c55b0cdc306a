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

// A worker cut off from Redis (through a proxy the test controls) kills
// its own instances before its lease runs out; another worker then ends
// the attempt as NodeLost and runs the retry — which starts only after
// the first attempt's process is gone, so the job never runs twice at
// once.
func TestPartitionedWorkerFencesAndTheRetryRunsElsewhere(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	proxy := testenv.StartProxy(t, redisAddr)
	one := 1
	fn := config.Function{Name: "fn", Image: jobImage(t), Args: []string{"sleep", "20s", "echo", "done"}, Retry: config.Retry{Max: &one, DelayS: 1}}
	lease := func(c *config.Config, nodeName string) {
		// Short, but with room for a loaded CI machine: renewed every
		// 2 s, fenced after 4 s without a renewal, lost after 2 s more.
		c.Worker.Node, c.Worker.LeaseS, c.Worker.NodeLostS = nodeName, 6, 2
	}
	// Worker A (with the gateway) reaches Redis through the proxy.
	cfgA := s.Config(t, proxy.Addr, fn)
	lease(cfgA, "node-a")
	a := testenv.StartStackWith(t, s, cfgA, node.Options{})
	t.Cleanup(proxy.Restore) // before A's stop (cleanups run last first)
	rec := a.Invoke(t, "fn", "", []byte(`{}`), 200)
	if rec.Node != "node-a" {
		t.Fatalf("started on %s", rec.Node)
	}
	// Worker B reaches Redis directly; it starts once the job runs on A.
	cfgB := s.Config(t, redisAddr, fn)
	lease(cfgB, "node-b")
	b := testenv.StartStackWith(t, s, cfgB, node.Options{Role: node.RoleWorker})

	proxy.Cut()
	cutAt := time.Now()
	ctdA := testenv.OpenContainerd(t, cfgA.Containerd.Address, cfgA.Containerd.Namespace)
	testenv.Eventually(t, 15*time.Second, "worker A to fence its instance", func() bool {
		n, err := ctdA.RunningTasks(context.Background())
		return err == nil && n == 0
	})
	fencedBy := time.Now()
	end := b.WaitEnd(t, rec.RequestId, 90*time.Second)
	if end.Status != record.Finished || end.Attempt != 2 || end.Node != "node-b" || len(end.Attempts) != 1 || end.Attempts[0].StatusCode != record.CodeNodeLost {
		t.Fatalf("after the partition: %+v", end)
	}
	started, err := time.Parse(record.TimeFormat, end.StartTime)
	if err != nil || !started.After(fencedBy) {
		t.Fatalf("the retry started at %s, before attempt 1 was stopped (%s): they overlapped", end.StartTime, fencedBy.Format(time.RFC3339Nano))
	}
	t.Logf("attempt 1 stopped within %s of the cut; attempt 2 started %s after that", fencedBy.Sub(cutAt).Round(100*time.Millisecond), started.Sub(fencedBy).Round(100*time.Millisecond))
}

// A job that ends while Redis is unreachable (restarting, cut off) gets
// its final status and its whole log once Redis is back; the worker does
// not drop the end and leave the record RUNNING (found by the chaos run).
func TestEndIsRecordedWhenRedisComesBack(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	proxy := testenv.StartProxy(t, testenv.Redis(t))
	fn := config.Function{Name: "fn", Image: jobImage(t), Args: []string{"sleep", "1s", "echo", "done"}, Retry: noRetry}
	st := testenv.StartStackWith(t, s, s.Config(t, proxy.Addr, fn), node.Options{})
	t.Cleanup(proxy.Restore)
	rec := st.Invoke(t, "fn", "", []byte(`{}`), 200)
	proxy.Cut()
	ctd := testenv.OpenContainerd(t, st.Config.Containerd.Address, st.Config.Containerd.Namespace)
	testenv.Eventually(t, 30*time.Second, "the job to end while Redis is away", func() bool {
		n, err := ctd.RunningTasks(context.Background())
		return err == nil && n == 0
	})
	proxy.Restore()
	end := st.WaitEnd(t, rec.RequestId, time.Minute)
	if end.Status != record.Finished || end.ExitCode == nil || *end.ExitCode != 0 {
		t.Fatalf("after Redis came back: %+v", end)
	}
	if out := st.Stdout(t, rec.RequestId); len(out) != 1 || out[0] != "done" {
		t.Fatalf("log %q", out)
	}
}
