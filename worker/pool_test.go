package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testenv"
	"github.com/jobgate/jobgate/worker"
	"github.com/jobgate/jobgate/worker/runtime"
)

func waitPool(t *testing.T, w *worker.Worker, fn string, ready int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if st := w.Provisioned()[fn]; st.Ready == ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool of %s: %+v, want %d ready", fn, w.Provisioned(), ready)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// provisioned: N keeps N prepared root filesystems; events take them (and
// see their own event), the pool refills, and shrinks on reload and on
// shutdown without leaving snapshots behind.
func TestProvisionedPoolTakesRefillsAndReleases(t *testing.T) {
	img := jobImage(t)
	st := testenv.StartStack(t, config.Function{Name: "warm", Image: img, Args: []string{"event"}, Provisioned: 2, Retry: noRetry})
	w := st.Node.Worker
	rt := w.Runtime()
	ctx := context.Background()
	waitPool(t, w, "warm", 2)
	before, err := rt.PreparedRootfs(ctx)
	if err != nil || len(before) != 2 {
		t.Fatalf("prepared %v %v", before, err)
	}
	for i, ev := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		end := run(t, st, "warm", []byte(ev))
		if end.Status != record.Finished {
			t.Fatalf("%d: %+v", i, end)
		}
		if out := st.Stdout(t, end.RequestId); len(out) != 1 || out[0] != ev {
			t.Fatalf("%d: stdout %q, want %s", i, out, ev)
		}
		// Its rootfs came from the pool and went with the instance.
		if ok, _ := rt.SnapshotExists(ctx, end.RequestId); ok {
			t.Fatalf("instance snapshot %s left behind", end.RequestId)
		}
		waitPool(t, w, "warm", 2)
	}
	after, _ := rt.PreparedRootfs(ctx)
	for k := range before {
		if _, still := after[k]; still {
			t.Fatalf("rootfs %s was never taken (pool %v → %v)", k, before, after)
		}
	}

	next := *st.Config
	next.Functions = []config.Function{{Name: "warm", Image: img, Args: []string{"event"}, Provisioned: 1, Retry: noRetry}}
	if err := config.Complete(&next, "test"); err != nil {
		t.Fatal(err)
	}
	st.Node.Reload(ctx, &next)
	waitPool(t, w, "warm", 1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left, _ := rt.PreparedRootfs(ctx)
		if len(left) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after shrinking to 1: %v", left)
		}
	}

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	check, err := runtime.New(ctx, runtime.Options{Address: st.Config.Containerd.Address, Namespace: st.Config.Containerd.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	if left, err := check.PreparedRootfs(ctx); err != nil || len(left) != 0 {
		t.Fatalf("after shutdown: %v %v", left, err)
	}
}
