package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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

// loadResult is bench/cmd/loadgen's answer.
type loadResult struct {
	Requests     int
	PerSecond    float64
	P50Ms, P99Ms float64
	Errors       int
	FirstErr     string
	CPU          cpuShare `json:"-"`
}

// ingestSetup is what the deployed ingest rows share: binaries built once,
// body files, a gateway process and the HTTP floor process.
type ingestSetup struct {
	b                *testing.B
	dir              string
	loadgen          string
	gateway, floor   string // base URLs
	token, redisAddr string
	// pids of the gateway, the floor and Redis, for their CPU time
	gatewayPid, floorPid, redisPid int
}

// cpuTime is a process's user+system CPU time so far (/proc/<pid>/stat,
// clock ticks of 10 ms).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): state is
	// the first, utime the 12th, stime the 13th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// cpuShare says where a load run's CPU went, per request: the server
// process's, Redis's and the load generator's.
type cpuShare struct{ server, redis, loadgen time.Duration }

func (c cpuShare) String() string {
	return fmt.Sprintf("server %.0f µs, Redis %.0f µs, load generator %.0f µs", us(c.server), us(c.redis), us(c.loadgen))
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func buildTool(b *testing.B, dir, pkg string) string {
	b.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = testenv.ModuleRoot()
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// body writes a request body file.
func (is *ingestSetup) body(name string, b []byte) string {
	path := filepath.Join(is.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		is.b.Fatal(err)
	}
	return path
}

// load runs the load generator (its own process) and fails on any error.
// It logs the CPU per request of the server (the gateway or the floor:
// whichever url names), Redis and the load generator.
func (is *ingestSetup) load(url, bodyPath string, args ...string) loadResult {
	is.b.Helper()
	server := is.gatewayPid
	if strings.HasPrefix(url, is.floor) {
		server = is.floorPid
	}
	server0, redis0 := cpuTime(server), cpuTime(is.redisPid)
	cmd := exec.Command(is.loadgen, append([]string{"-url", url, "-token", is.token, "-body", bodyPath}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		is.b.Fatalf("loadgen %v: %v", args, err)
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil || r.Errors > 0 {
		is.b.Fatalf("loadgen %v: %s (%v)", args, out, err)
	}
	n := time.Duration(max(r.Requests, 1))
	r.CPU = cpuShare{
		server:  (cpuTime(server) - server0) / n,
		redis:   (cpuTime(is.redisPid) - redis0) / n,
		loadgen: (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()) / n,
	}
	return r
}

// rawEnqueue is n asynq Enqueues of payload from conc goroutines, in this
// process, on the same Redis: tasks per second.
func (is *ingestSetup) rawEnqueue(payload []byte, n, conc int) float64 {
	is.b.Helper()
	aq := asynq.NewClient(asynq.RedisClientOpt{Addr: is.redisAddr, PoolSize: 2 * conc})
	defer aq.Close()
	enqueue := func() error {
		_, err := aq.EnqueueContext(context.Background(), asynq.NewTask("bench", payload), asynq.Queue("raw"))
		return err
	}
	if _, err := closedLoop(min(n, 500), conc, enqueue); err != nil {
		is.b.Fatal(err)
	}
	redis0 := cpuTime(is.redisPid)
	rate, err := closedLoop(n, conc, enqueue)
	if err != nil {
		is.b.Fatal(err)
	}
	detail("raw Enqueue of %d B: %.0f tasks/s, Redis CPU %.0f µs per task", len(payload), rate, us((cpuTime(is.redisPid)-redis0)/time.Duration(n)))
	return rate
}

// redisPid is the process id of the Redis at addr.
func redisPid(b *testing.B, addr string) int {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	b.Fatalf("redis %s: no process_id", addr)
	return 0
}

// startIngest builds the tools and starts `jobgate serve --role gateway`
// (bearer tokens on) and the HTTP floor as their own processes.
func startIngest(b *testing.B) *ingestSetup {
	s := testenv.Shared(b)
	is := &ingestSetup{b: b, dir: b.TempDir(), token: "bench-token", redisAddr: testenv.Redis(b)}
	is.loadgen = buildTool(b, is.dir, "./bench/cmd/loadgen")
	floorBin := buildTool(b, is.dir, "./bench/cmd/httpfloor")

	cfg := s.Config(b, is.redisAddr, config.Function{Name: "fn", Image: s.Registry + "/bench/none:1"})
	cfg.Gateway.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	is.gateway = "http://" + cfg.Gateway.Listen
	gw := s.StartServeEnv(b, testenv.WriteConfig(b, cfg), "gateway", is.gateway, []string{"JOBGATE_TOKENS=" + is.token})
	is.gatewayPid = gw.Cmd.Process.Pid
	is.redisPid = redisPid(b, is.redisAddr)

	floor := exec.Command(floorBin, "-redis", is.redisAddr)
	stdout, err := floor.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := floor.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = floor.Process.Kill(); _ = floor.Wait() })
	is.floorPid = floor.Process.Pid
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("httpfloor: %v", err)
	}
	is.floor = strings.TrimSpace(line)
	return is
}

// BenchmarkIngest measures ingest as an operator deploys it (issue 13):
// `jobgate serve --role gateway` as its own process with bearer tokens
// on, the load generator as another (32 keep-alive clients), 1 KiB
// events. Baselines in the same run: the HTTP floor (a net/http handler
// doing one asynq Enqueue, its own process) and raw asynq Enqueue loops
// (32 goroutines, this process), all on one Redis.
func BenchmarkIngest(b *testing.B) {
	const clients = 32
	n, nBig := scale(20000, 300), scale(2000, 50)
	is := startIngest(b)
	event := event1KiB()
	one := is.body("event-1k.json", event)
	var batch [][]byte
	for range 100 {
		batch = append(batch, event)
	}
	hundred := is.body("batch-100.json", append(append([]byte("["), bytes.Join(batch, []byte(","))...), ']'))
	bigEvent := []byte(`{"data":"` + strings.Repeat("x", 100<<10-11) + `"}`)
	big := is.body("event-100k.json", bigEvent)
	invoke := is.gateway + "/v1/functions/fn/invoke?wait=none"
	invokeBatch := is.gateway + "/v1/functions/fn/invoke-batch"
	rounds := scale(3, 1)
	for b.Loop() {
		// Warm both servers (connections, Lua script cache).
		is.load(invoke, one, "-n", "1000", "-clients", fmt.Sprint(clients))
		is.load(is.floor, one, "-n", "1000", "-clients", fmt.Sprint(clients))

		// Each row alternates baseline and jobgate runs and compares
		// their medians: the machine's speed drifts within seconds.
		var floors, ours []float64
		for range rounds {
			f := is.load(is.floor, one, "-n", fmt.Sprint(n), "-clients", fmt.Sprint(clients))
			o := is.load(invoke, one, "-n", fmt.Sprint(n), "-clients", fmt.Sprint(clients))
			detail("single: floor %.0f req/s (%v); jobgate %.0f req/s (%v)", f.PerSecond, f.CPU, o.PerSecond, o.CPU)
			floors, ours = append(floors, f.PerSecond), append(ours, o.PerSecond)
		}
		peak, ratio := middle(ours), middle(ours)/middle(floors)
		row(b, fmt.Sprintf("ingest as deployed: invoke?wait=none, 1 KiB event, gateway process, tokens on, %d clients in a load process, %d requests, median of %d alternating runs", clients, n, rounds),
			fmt.Sprintf("%.0f req/s", peak), fmt.Sprintf("%.0f req/s (HTTP floor: net/http + one asynq Enqueue, own process)", middle(floors)),
			ratio, "≥ 1.0×", ratio >= 1.0)

		var raws, batches []float64
		for range rounds {
			raws = append(raws, is.rawEnqueue(event, n, clients))
			bt := is.load(invokeBatch, hundred, "-n", fmt.Sprint(max(n/100, 8)), "-clients", "8")
			detail("batch: jobgate %.0f events/s (per 100-event request: %v)", bt.PerSecond*100, bt.CPU)
			batches = append(batches, bt.PerSecond*100)
		}
		raw, events := middle(raws), middle(batches)
		row(b, fmt.Sprintf("ingest as deployed: invoke-batch, 8 clients × 100-event batches of 1 KiB events, median of %d alternating runs", rounds),
			fmt.Sprintf("%.0f events/s", events), fmt.Sprintf("%.0f tasks/s (raw asynq Enqueue, %d goroutines)", raw, clients),
			events/raw, "≥ 1.0×", events >= raw)

		// Latency at half our peak; the floor at the same rate shows what
		// the machine (three processes on its cores) adds by itself.
		half := fmt.Sprint(peak / 2)
		var floorP50, floorP99, p50, p99 []float64
		requests := 0
		for range rounds {
			f := is.load(is.floor, one, "-rate", half, "-d", fmt.Sprintf("%ds", scale(5, 1)))
			o := is.load(invoke, one, "-rate", half, "-d", fmt.Sprintf("%ds", scale(5, 1)))
			detail("latency: floor p50 %.1f ms p99 %.1f ms; jobgate p50 %.1f ms p99 %.1f ms (%v)", f.P50Ms, f.P99Ms, o.P50Ms, o.P99Ms, o.CPU)
			floorP50, floorP99 = append(floorP50, f.P50Ms), append(floorP99, f.P99Ms)
			p50, p99 = append(p50, o.P50Ms), append(p99, o.P99Ms)
			requests += o.Requests
		}
		row(b, fmt.Sprintf("ingest as deployed: latency at half peak (%.0f req/s open loop from the load process, %d requests, median p99 of %d alternating runs)", peak/2, requests, rounds),
			fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", middle(p50), middle(p99)),
			fmt.Sprintf("HTTP floor at the same rate: p50 %.1f ms, p99 %.1f ms", middle(floorP50), middle(floorP99)),
			nanRatio, "p99 ≤ 5 ms", middle(p99) <= 5)

		var rawBigs, bigs []float64
		for range rounds {
			rawBigs = append(rawBigs, is.rawEnqueue(bigEvent, nBig, clients))
			o := is.load(invoke, big, "-n", fmt.Sprint(nBig), "-clients", fmt.Sprint(clients))
			detail("100 KiB: jobgate %.0f req/s (%v)", o.PerSecond, o.CPU)
			bigs = append(bigs, o.PerSecond)
		}
		rawBig, oursBig := middle(rawBigs), middle(bigs)
		row(b, fmt.Sprintf("ingest as deployed: 100 KiB events, %d clients, %d requests, median of %d alternating runs", clients, nBig, rounds),
			fmt.Sprintf("%.0f req/s", oursBig), fmt.Sprintf("%.0f tasks/s (raw asynq Enqueue of the same payload)", rawBig),
			oursBig/rawBig, "≥ 0.8×", oursBig >= 0.8*rawBig)
	}
}

// middle is the median of rates (the mean of the two middle ones).
func middle(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// detail prints a measurement behind a row (go test keeps only the first
// lines of a benchmark's log).
func detail(format string, args ...any) { fmt.Printf("  ingest "+format+"\n", args...) }
