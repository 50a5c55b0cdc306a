package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// launchParallelism is the worker's concurrency and the bare loop's
// goroutine count.
const launchParallelism = 8

// BenchmarkLaunchRate: N short jobs end to end (all enqueued with
// wait=none, then until every one is FINISHED) against a bare containerd
// loop with the same parallelism doing create → start → wait for exit →
// delete for each.
func BenchmarkLaunchRate(b *testing.B) {
	n := scale(300, 10)
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	cfg := s.Config(b, testenv.Redis(b), config.Function{Name: "fn", Image: ref, Args: []string{"exit", "0"}})
	cfg.Worker.Concurrency = launchParallelism
	st := startStack(b, s, cfg, "")
	warm := st.Invoke(b, "fn", "", []byte(`{}`), http.StatusOK)
	st.WaitEnd(b, warm.RequestId, time.Minute)

	client, err := containerd.New(s.Containerd)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), cfg.Containerd.Namespace)
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		// Bare: launchParallelism goroutines, each job's whole lifecycle.
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, launchParallelism)
		t0 := time.Now()
		for g := range launchParallelism {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					if err := bareRun(ctx, client, img, fmt.Sprintf("bare-%d-%d", g, i)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		bare := time.Since(t0)
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}

		t0 = time.Now()
		ids := make(chan string, n)
		if _, err := closedLoop(n, ingestConcurrency, func() error {
			rec, err := invokeNone(http.DefaultClient, st.URL, "fn", []byte(`{}`))
			if err == nil {
				ids <- rec.RequestId
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		close(ids)
		pending := map[string]bool{}
		for id := range ids {
			pending[id] = true
		}
		deadline := time.Now().Add(10 * time.Minute)
		// Poll cheaply (one pipelined round trip per 50 ms): the harness
		// must not take the CPU the jobs need.
		for len(pending) > 0 {
			ids := make([]string, 0, len(pending))
			for id := range pending {
				ids = append(ids, id)
			}
			sts, err := st.Records.Statuses(ctx, ids)
			if err != nil {
				b.Fatal(err)
			}
			for id, status := range sts {
				if status.Terminal() {
					if status != record.Finished {
						rec, _ := st.Records.Get(ctx, id)
						b.Fatalf("%s ended %s: %+v", id, status, rec)
					}
					delete(pending, id)
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d jobs not finished after 10 min", len(pending))
			}
			time.Sleep(50 * time.Millisecond)
		}
		ours := time.Since(t0)
		oursRate, bareRate := float64(n)/ours.Seconds(), float64(n)/bare.Seconds()
		ratio := oursRate / bareRate
		row(b, fmt.Sprintf("launch rate: %d short jobs, enqueue → all FINISHED, parallelism %d", n, launchParallelism),
			fmt.Sprintf("%.1f jobs/s (%.1f s)", oursRate, ours.Seconds()),
			fmt.Sprintf("%.1f jobs/s (%.1f s; bare containerd create→start→exit→delete)", bareRate, bare.Seconds()), ratio, "≥ 0.8×", ratio >= 0.8)
	}
}

// bareRun is one job's whole life with the containerd client alone.
func bareRun(ctx context.Context, client *containerd.Client, img containerd.Image, id string) error {
	ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/job", "exit", "0")))
	if err != nil {
		return fmt.Errorf("bare create %s: %w", id, err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		return fmt.Errorf("bare task %s: %w", id, err)
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("bare start %s: %w", id, err)
	}
	<-exitC
	if _, err := task.Delete(ctx); err != nil {
		return fmt.Errorf("bare delete %s: %w", id, err)
	}
	return nil
}
