package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// ingestConcurrency is the fixed client concurrency of both loops.
const ingestConcurrency = 16

// event1KiB is a 1 KiB JSON event.
func event1KiB() []byte {
	e := []byte(`{"data":"` + strings.Repeat("x", 1024-11) + `"}`)
	if len(e) != 1024 {
		panic(len(e))
	}
	return e
}

// closedLoop runs op n times from conc goroutines; it returns the
// operations per second.
func closedLoop(n, conc int, op func() error) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// openLoop sends at rate per second for d, each call on its own
// goroutine, and returns the latencies (from the intended send time, so a
// stalled sender counts against it).
func openLoop(rate float64, d time.Duration, op func() error) ([]time.Duration, error) {
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d / interval)
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	t0 := time.Now()
	for i := range n {
		due := t0.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := op(); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			lat[i] = time.Since(due)
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	return lat, nil
}

// BenchmarkIngest: POST /invoke?wait=none with a 1 KiB event at a fixed
// client concurrency against a raw asynq.Client.Enqueue loop of the same
// payload and concurrency on the same Redis; then latency at half of the
// measured peak.
func BenchmarkIngest(b *testing.B) {
	n := scale(20000, 300)
	s := testenv.Shared(b)
	cfg := s.Config(b, testenv.Redis(b), config.Function{Name: "fn", Image: s.Registry + "/bench/none:1"})
	st := startStack(b, s, cfg, "gateway")
	event := event1KiB()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * ingestConcurrency}}
	url := st.URL + "/v1/functions/fn/invoke?wait=none"
	invoke := func() error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(event))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("invoke: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	aq := asynq.NewClient(asynq.RedisClientOpt{Addr: cfg.Redis.Addr})
	defer aq.Close()
	enqueue := func() error {
		_, err := aq.EnqueueContext(context.Background(), asynq.NewTask("bench", event), asynq.Queue("bench"))
		return err
	}
	// The HTTP floor: a net/http handler that only reads the body and
	// enqueues it raw. ours/floor is what jobgate adds on top of HTTP.
	floorSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			_, err = aq.EnqueueContext(r.Context(), asynq.NewTask("bench", body), asynq.Queue("floor"))
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"Status":"PENDING"}`))
	}))
	defer floorSrv.Close()
	floor := func() error {
		resp, err := client.Post(floorSrv.URL, "application/json", bytes.NewReader(event))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("floor: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	for b.Loop() {
		// Warm both paths (connections, Lua script cache).
		if _, err := closedLoop(200, ingestConcurrency, invoke); err != nil {
			b.Fatal(err)
		}
		if _, err := closedLoop(200, ingestConcurrency, enqueue); err != nil {
			b.Fatal(err)
		}
		base, err := closedLoop(n, ingestConcurrency, enqueue)
		if err != nil {
			b.Fatal(err)
		}
		ours, err := closedLoop(n, ingestConcurrency, invoke)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := closedLoop(200, ingestConcurrency, floor); err != nil {
			b.Fatal(err)
		}
		floorRate, err := closedLoop(n, ingestConcurrency, floor)
		if err != nil {
			b.Fatal(err)
		}
		ratio := ours / base
		row(b, fmt.Sprintf("ingest: invoke?wait=none, 1 KiB event, %d clients, %d requests", ingestConcurrency, n),
			fmt.Sprintf("%.0f req/s", ours), fmt.Sprintf("%.0f enq/s (raw asynq Enqueue)", base), ratio, "≥ 0.8×", ratio >= 0.8)
		row(b, "ingest, informative: the same against an HTTP handler that only enqueues (HTTP floor)",
			fmt.Sprintf("%.0f req/s", ours), fmt.Sprintf("%.0f req/s (net/http + asynq Enqueue)", floorRate), ours/floorRate, "—", true)

		lat, err := openLoop(ours/2, time.Duration(scale(5, 1))*time.Second, invoke)
		if err != nil {
			b.Fatal(err)
		}
		p99 := percentile(lat, 99)
		row(b, fmt.Sprintf("ingest latency at half peak (%.0f req/s open loop, %d requests)", ours/2, len(lat)),
			fmt.Sprintf("p50 %s, p99 %s", ms(percentile(lat, 50)), ms(p99)), "—", nanRatio, "p99 ≤ 5 ms", p99 <= 5*time.Millisecond)
	}
}
