package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/imagebuild"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// pushBigJob pushes the job image plus a layer of size random bytes
// (incompressible, so the download is as large as the image).
func pushBigJob(ref string, size int64) error {
	bin, err := testjob.Binary()
	if err != nil {
		return err
	}
	img, err := imagebuild.Build(imagebuild.Spec{
		Files:      map[string]imagebuild.File{"bin/job": {Content: bin, Mode: 0o755}},
		Entrypoint: []string{"/bin/job"},
		Env:        testjob.ImageEnv,
	})
	if err != nil {
		return err
	}
	layer, err := random.Layer(size, types.DockerLayer)
	if err != nil {
		return err
	}
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return err
	}
	_, err = imagebuild.Push(ref, img)
	return err
}

// timeToRunning invokes fn with wait=scheduled and returns how long the
// RUNNING answer took.
func timeToRunning(b *testing.B, st *testenv.Stack, fn string) time.Duration {
	t0 := time.Now()
	rec := st.Invoke(b, fn, "", []byte(`{}`), http.StatusOK)
	d := time.Since(t0)
	if !rec.Status.Started() {
		b.Fatalf("%s not started: %+v", fn, rec)
	}
	if end := st.WaitEnd(b, rec.RequestId, 5*time.Minute); end.Status != record.Finished {
		b.Fatalf("%+v", end)
	}
	return d
}

// BenchmarkAcceleration: time to RUNNING for a ~200 MB image that is not
// on the worker (each cold run removes it and lets containerd collect it)
// against the same-sized image of an accelerated function.
func BenchmarkAcceleration(b *testing.B) {
	size := int64(scale(200, 4)) << 20
	cold, warm := scale(3, 1), scale(10, 2)
	s := testenv.Shared(b)
	coldRef, accelRef := s.Registry+"/bench/big-cold:1", s.Registry+"/bench/big-accel:1"
	for _, ref := range []string{coldRef, accelRef} {
		if err := pushBigJob(ref, size); err != nil {
			b.Fatal(err)
		}
	}
	cfg := s.Config(b, testenv.Redis(b),
		config.Function{Name: "cold", Image: coldRef, Args: []string{"exit", "0"}},
		config.Function{Name: "accel", Image: accelRef, Args: []string{"exit", "0"}, Acceleration: true})
	cfg.Worker.PullTimeoutS = 600
	// Every cold run removes the image behind the runtime's back: its
	// tag check must not be trusted from the run before.
	noRecheckWindow := 0
	cfg.Worker.TagRecheckMs = &noRecheckWindow
	cfg.Gateway.WaitTimeoutS = 600
	st := startStack(b, s, cfg, "")
	w := st.Node.Worker
	ctx := context.Background()
	ctd := testenv.OpenContainerd(b, cfg.Containerd.Address, cfg.Containerd.Namespace)
	for b.Loop() {
		t0 := time.Now()
		for w.Acceleration()["accel"].State != "pinned" {
			if time.Since(t0) > 5*time.Minute {
				b.Fatalf("acceleration: %+v", w.Acceleration())
			}
			time.Sleep(50 * time.Millisecond)
		}
		prepull := time.Since(t0)
		var colds, accels []time.Duration
		for range cold {
			if err := ctd.RemoveImage(ctx, coldRef); err != nil {
				b.Fatal(err)
			}
			colds = append(colds, timeToRunning(b, st, "cold"))
		}
		for range warm {
			accels = append(accels, timeToRunning(b, st, "accel"))
		}
		mc, ma := median(colds), median(accels)
		ratio := float64(ma) / float64(mc)
		row(b, fmt.Sprintf("acceleration: time to RUNNING, %d MB image, median of %d accelerated vs %d cold", size>>20, warm, cold),
			ms(ma)+fmt.Sprintf(" (pre-pull at start took %.1f s)", prepull.Seconds()), ms(mc)+" (cold: pull + unpack)", ratio,
			"≤ 0.2× (≥ 5× faster)", ratio <= 0.2)
	}
}

// BenchmarkProvisioned: time to RUNNING taking a provisioned instance
// against a cached-image cold create of the same image, interleaved.
func BenchmarkProvisioned(b *testing.B) {
	runs := scale(30, 3)
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	st := startStack(b, s, s.Config(b, testenv.Redis(b),
		config.Function{Name: "plain", Image: ref, Args: []string{"exit", "0"}},
		config.Function{Name: "prov", Image: ref, Args: []string{"exit", "0"}, Provisioned: 2}), "")
	w := st.Node.Worker
	timeToRunning(b, st, "plain") // cache the image
	for b.Loop() {
		var prov, plain []time.Duration
		for range runs {
			for t0 := time.Now(); w.Provisioned()["prov"].Ready < 2; time.Sleep(5 * time.Millisecond) {
				if time.Since(t0) > time.Minute {
					b.Fatalf("pool: %+v", w.Provisioned())
				}
			}
			prov = append(prov, timeToRunning(b, st, "prov"))
			plain = append(plain, timeToRunning(b, st, "plain"))
		}
		mp, mc := median(prov), median(plain)
		ratio := float64(mp) / float64(mc)
		row(b, fmt.Sprintf("provisioned: time to RUNNING, median of %d", runs), ms(mp), ms(mc)+" (cached image, cold create)",
			ratio, "≤ 0.5×", ratio <= 0.5)
	}
}

// BenchmarkAdaptiveWarm: a steady stream (1 event/s for a minute, then a
// burst of 20) to a function with no configuration but worker.warm.auto,
// time to RUNNING of every start, against cached-image cold creates of
// the same image on a worker without adaptive pools, interleaved with
// the stream (one after each of its events).
func BenchmarkAdaptiveWarm(b *testing.B) {
	stream, burst := scale(60, 5), scale(20, 3)
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	auto := s.Config(b, testenv.Redis(b), config.Function{Name: "auto", Image: ref, Args: []string{"exit", "0"}})
	auto.Worker.Warm.Auto = true
	st := startStack(b, s, auto, "")
	cold := startStack(b, s, s.Config(b, testenv.Redis(b), config.Function{Name: "plain", Image: ref, Args: []string{"exit", "0"}}), "")
	timeToRunning(b, cold, "plain") // cache the image
	for b.Loop() {
		var starts, colds []time.Duration
		t0 := time.Now()
		for i := range stream {
			time.Sleep(time.Until(t0.Add(time.Duration(i) * time.Second)))
			starts = append(starts, timeToRunning(b, st, "auto"))
			colds = append(colds, timeToRunning(b, cold, "plain"))
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := timeToRunning(b, st, "auto")
				mu.Lock()
				starts = append(starts, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
		base := median(colds)
		m, p90 := median(starts), percentile(starts, 90)
		name := fmt.Sprintf("adaptive warm (warm.auto only): time to RUNNING, 1 event/s for %d s then a burst of %d", stream, burst)
		row(b, name+", median", ms(m), ms(base)+" (cached image, cold create, median)", float64(m)/float64(base), "≤ 0.3×", float64(m) <= 0.3*float64(base))
		row(b, name+", p90", ms(p90), ms(base)+" (the same)", float64(p90)/float64(base), "≤ 0.6×", float64(p90) <= 0.6*float64(base))
		b.Logf("adaptive warm: pool after the burst %+v", st.Node.Worker.Provisioned())
	}
}
