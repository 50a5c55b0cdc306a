package bench

import (
	"context"
	"fmt"
	"net/http"
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

// BenchmarkSchedule: invoke?wait=scheduled → RUNNING answer with a cached
// image, against a bare containerd create + snapshot + task + start of the
// same image, interleaved, 50 runs each. "fn" has the default network
// (bridge: its own namespace, NAT, the egress policy); "nonet" the same
// job with network: none, so the second row is what the network costs.
func BenchmarkSchedule(b *testing.B) {
	runs := scale(50, 3)
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	cfg := s.Config(b, testenv.Redis(b),
		config.Function{Name: "fn", Image: ref, Args: []string{"exit", "0"}, Network: config.NetworkBridge},
		config.Function{Name: "nonet", Image: ref, Args: []string{"exit", "0"}, Network: config.NetworkNone})
	// The jobs resolve no name: the host's resolv.conf is written, never asked.
	cfg.Worker.Network = testenv.JobNetwork(b)
	st := startStack(b, s, cfg, "")
	// Warm: pull the image once.
	warm := st.Invoke(b, "fn", "", []byte(`{}`), 200)
	st.WaitEnd(b, warm.RequestId, time.Minute)
	schedule := func(fn string) time.Duration {
		t0 := time.Now()
		rec := st.Invoke(b, fn, "", []byte(`{"i":1}`), http.StatusOK)
		d := time.Since(t0)
		if !rec.Status.Started() {
			b.Fatalf("not started: %+v", rec)
		}
		if end := st.WaitEnd(b, rec.RequestId, time.Minute); end.Status != record.Finished {
			b.Fatalf("%+v", end)
		}
		return d
	}

	client, err := containerd.New(s.Containerd)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), st.Config.Containerd.Namespace)
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		b.Fatal(err)
	}

	var ours, nonet, bare []time.Duration
	for b.Loop() {
		ours, nonet, bare = ours[:0], nonet[:0], bare[:0]
		for i := 0; i < runs; i++ {
			ours = append(ours, schedule("fn"))
			nonet = append(nonet, schedule("nonet"))

			id := fmt.Sprintf("bare-%d-%d", time.Now().UnixNano(), i)
			t0 := time.Now()
			ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
				containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/job", "exit", "0")))
			if err != nil {
				b.Fatal(err)
			}
			task, err := ctr.NewTask(ctx, cio.NullIO)
			if err != nil {
				b.Fatal(err)
			}
			exitC, err := task.Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := task.Start(ctx); err != nil {
				b.Fatal(err)
			}
			bare = append(bare, time.Since(t0))
			<-exitC
			if _, err := task.Delete(ctx); err != nil {
				b.Fatal(err)
			}
			if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
				b.Fatal(err)
			}
		}
	}
	mo, mb := median(ours), median(bare)
	ratio := float64(mo) / float64(mb)
	row(b, fmt.Sprintf("schedule: invoke?wait=scheduled → RUNNING, cached image, network: bridge (the default), median of %d", runs),
		ms(mo), ms(mb)+" (bare containerd create+snapshot+task+start, no network)", ratio, "≤ 1.2×", ratio <= 1.2)
	mn := median(nonet)
	row(b, fmt.Sprintf("network cost: the same schedule with network: bridge vs none, median of %d (%+.1f ms)", runs, float64((mo-mn).Microseconds())/1000),
		ms(mo), ms(mn)+" (network: none)", float64(mo)/float64(mn), "≤ +15 ms", mo-mn <= 15*time.Millisecond)
}
