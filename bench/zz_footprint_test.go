package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// rssBytes is a process's resident set size.
func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// rssOf sums the RSS of the processes whose command name is comm.
func rssOf(comm string) (total int64, n int) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		c, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		total += rssBytes(pid)
		n++
	}
	return total, n
}

func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, _ := rdb.Info(ctx, "memory").Result()
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func mib(n float64) string { return fmt.Sprintf("%.2f MiB", n/(1<<20)) }

// BenchmarkFootprint: a `jobgate serve --role worker` process with N
// concurrent sleeping jobs: its RSS growth per running instance (and, for
// the record, the log driver's and shim's), and Redis memory per running
// instance.
func BenchmarkFootprint(b *testing.B) {
	n := scale(500, 5)
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		cfg := s.Config(b, testenv.Redis(b), config.Function{Name: "sleeper", Image: ref, Args: []string{"sleep", "1h"}, MemoryMB: 64})
		cfg.Worker.Concurrency = launchParallelism
		path := testenv.WriteConfig(b, cfg)
		wk := s.StartServe(b, path, "worker", "")
		gw := startStack(b, s, cfg, "gateway")
		rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr})
		defer rdb.Close()

		warm := gw.Invoke(b, "sleeper", "?wait=scheduled", []byte(`{}`), http.StatusOK)
		time.Sleep(2 * time.Second)
		rss0, redis0 := rssBytes(wk.Cmd.Process.Pid), usedMemory(ctx, rdb)
		logger0, _ := rssOf("jobgate-logger")
		shim0, _ := rssOf("containerd-shim")
		ids := []string{warm.RequestId}
		var mu sync.Mutex
		if _, err := closedLoop(n, ingestConcurrency, func() error {
			rec, err := invokeNone(http.DefaultClient, gw.URL, "sleeper", []byte(`{}`))
			if err == nil {
				mu.Lock()
				ids = append(ids, rec.RequestId)
				mu.Unlock()
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for running := 0; running < n+1; {
			running = 0
			sts, err := gw.Records.Statuses(ctx, ids)
			if err != nil {
				b.Fatal(err)
			}
			for id, status := range sts {
				if status == record.Running {
					running++
				} else if status.Terminal() {
					rec, _ := gw.Records.Get(ctx, id)
					b.Fatalf("%s ended: %+v", id, rec)
				}
			}
			// A bound, not a measurement: 500 creates take minutes on
			// a machine whose containerd is slow that day.
			if time.Since(t0) > 20*time.Minute {
				b.Fatalf("%d of %d running after 20 min", running, n+1)
			}
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		rss1, redis1 := rssBytes(wk.Cmd.Process.Pid), usedMemory(ctx, rdb)
		logger1, loggers := rssOf("jobgate-logger")
		shim1, shims := rssOf("containerd-shim")
		perRSS := float64(rss1-rss0) / float64(n)
		row(b, fmt.Sprintf("footprint: worker RSS per running instance, %d sleeping jobs", n),
			mib(perRSS)+fmt.Sprintf(" (worker %s → %s)", mib(float64(rss0)), mib(float64(rss1))), "—", nanRatio, "≤ 1 MiB", perRSS <= 1<<20)
		b.Logf("alongside, per instance: log driver %s (%d processes), shim %s (%d processes)",
			mib(float64(logger1-logger0)/float64(n)), loggers, mib(float64(shim1-shim0)/float64(n)), shims)
		row(b, fmt.Sprintf("footprint: outside the worker, per running instance (%d jobs)", n),
			fmt.Sprintf("log driver %s, containerd shim %s, Redis %.1f KiB", mib(float64(logger1-logger0)/float64(n)),
				mib(float64(shim1-shim0)/float64(n)), float64(redis1-redis0)/float64(n)/1024), "—", nanRatio, "—", true)

		// Stop the worker and SIGKILL the sleepers (16 at a time). Their
		// containers are left to the test environment's teardown (it ends
		// the shims and containerd): deleting 500 one by one takes ~100 s.
		// This file's name makes this benchmark run last, so they disturb
		// no other measurement.
		b.Logf("footprint: %d running after %.0f s", n+1, time.Since(t0).Seconds())
		_ = wk.Cmd.Process.Kill()
		client, err := containerd.New(s.Containerd)
		if err != nil {
			b.Fatal(err)
		}
		cctx := namespaces.WithNamespace(ctx, cfg.Containerd.Namespace)
		ctrs, _ := client.Containers(cctx)
		work := make(chan containerd.Container)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range work {
					if t, err := c.Task(cctx, nil); err == nil {
						_ = t.Kill(cctx, syscall.SIGKILL, containerd.WithKillAll)
					}
				}
			}()
		}
		for _, c := range ctrs {
			work <- c
		}
		close(work)
		wg.Wait()
		client.Close()
		b.Logf("footprint: %d killed, %.0f s in", len(ctrs), time.Since(t0).Seconds())
	}
}

// BenchmarkQueuedBytes: Redis memory per queued event, M queued through a
// gateway that nothing consumes, against raw asynq tasks of the same
// payload on a Redis of their own.
func BenchmarkQueuedBytes(b *testing.B) {
	queued := scale(100000, 200)
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	ctx := context.Background()
	for b.Loop() {
		// Queued: gateway only, nothing consumes.
		qcfg := s.Config(b, testenv.Redis(b), config.Function{Name: "fn", Image: ref})
		q := startStack(b, s, qcfg, "gateway")
		qrdb := redis.NewClient(&redis.Options{Addr: qcfg.Redis.Addr})
		defer qrdb.Close()
		event := event1KiB()
		before := usedMemory(ctx, qrdb)
		client2 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8 * ingestConcurrency}}
		// Filling, not measuring speed: more clients.
		if _, err := closedLoop(queued, 4*ingestConcurrency, func() error {
			resp, err := client2.Post(q.URL+"/v1/functions/fn/invoke?wait=none", "application/json", bytes.NewReader(event))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				return fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		ours := float64(usedMemory(ctx, qrdb)-before) / float64(queued)

		raddr := testenv.Redis(b)
		rrdb := redis.NewClient(&redis.Options{Addr: raddr})
		defer rrdb.Close()
		aq := asynq.NewClient(asynq.RedisClientOpt{Addr: raddr})
		defer aq.Close()
		before = usedMemory(ctx, rrdb)
		if _, err := closedLoop(queued, 4*ingestConcurrency, func() error {
			_, err := aq.EnqueueContext(ctx, asynq.NewTask("bench", event), asynq.Queue("bench"))
			return err
		}); err != nil {
			b.Fatal(err)
		}
		base := float64(usedMemory(ctx, rrdb)-before) / float64(queued)
		row(b, fmt.Sprintf("footprint: Redis memory per queued event, %d queued, 1 KiB events", queued),
			fmt.Sprintf("%.0f B", ours), fmt.Sprintf("%.0f B (raw asynq task, same payload)", base), ours/base, "≤ 1.2×", ours <= 1.2*base)
	}
}
