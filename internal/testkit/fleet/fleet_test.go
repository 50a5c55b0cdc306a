//go:build fleet

package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/redisconn"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

var report = flag.String("fleet.report", "", "write the failure table into this Markdown file (between its fleet markers)")

// spread is the load spread's size: task fleet, whose results
// docs/SCALING.md holds, runs 600; CI runs 300 (on a 2-core box the
// spread is half of each suite's time).
var spread = flag.Int("fleet.spread", 600, "jobs in the load-spread stage")

func TestMain(m *testing.M) { testenv.Main(m) }

// runs is where every job reports (the body's `hold`): a run starts when
// its request arrives and ends when its body ends — completely, or cut
// off when the job's process died.
type runs struct {
	mu     sync.Mutex
	active map[string]int // RequestId → runs in progress
	most   map[string]int // RequestId → most runs at once
	done   map[string]int // RequestId → runs that completed
	cut    map[string]int // RequestId → runs cut off
}

func (c *runs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Request-Id")
	c.mu.Lock()
	c.active[id]++
	c.most[id] = max(c.most[id], c.active[id])
	c.mu.Unlock()
	_, err := io.Copy(io.Discard, r.Body)
	c.mu.Lock()
	c.active[id]--
	if err == nil {
		c.done[id]++
	} else {
		c.cut[id]++
	}
	c.mu.Unlock()
}

func (c *runs) of(id string) (done, cut, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done[id], c.cut[id], c.most[id]
}

// worker is one host: its containerd and its `jobgate serve --role worker`.
type worker struct {
	name  string
	host  *testenv.Host
	cfg   *config.Config
	serve *testenv.Serve
	proxy *testenv.Proxy // its way to Redis, when it has one of its own
}

// replicated is the Redis under test: a Sentinel group or a Cluster.
type replicated interface {
	// master is the address of the master holding the queue.
	master(ctx context.Context) (string, error)
	// switchover promotes that master's replica.
	switchover(ctx context.Context) error
	node(addr string) *testenv.RedisServer
	// settled waits until every replica is synced (and, on a Cluster,
	// every node agrees on the slot map).
	settled(t testing.TB, d time.Duration)
}

type sentinel struct{ g *testenv.SentinelGroup }

func (s sentinel) master(ctx context.Context) (string, error) { return s.g.Master(ctx) }
func (s sentinel) switchover(ctx context.Context) error       { return s.g.Failover(ctx) }
func (s sentinel) node(addr string) *testenv.RedisServer      { return s.g.Node(addr) }
func (s sentinel) settled(t testing.TB, d time.Duration)      { s.g.WaitSynced(t, d) }

// queueKey is a key in the slot of asynq's queue (and of jobgate's keys).
var queueKey = keyspace.AsynqPending(queue.Name)

type cluster struct{ c *testenv.RedisCluster }

func (c cluster) master(ctx context.Context) (string, error) {
	m, _, err := c.c.MasterOf(ctx, queueKey)
	return m.Addr, err
}
func (c cluster) switchover(ctx context.Context) error  { return c.c.Failover(ctx, queueKey) }
func (c cluster) node(addr string) *testenv.RedisServer { return c.c.Node(addr) }
func (c cluster) settled(t testing.TB, d time.Duration) {
	c.c.WaitSynced(t, d)
	c.c.WaitAgreed(t, d)
}

type fleet struct {
	t        *testing.T
	s        *testenv.Services
	redis    config.Redis // every member's redis block
	ha       replicated
	col      *runs
	fns      []config.Function
	workers  []*worker
	gateways []string // base URLs
	gwServes []*testenv.Serve
	rdb      redis.UniversalClient
	records  *record.Store
	client   *http.Client
	rows     []row
}

// row is one fault's line in the failure table.
type row struct {
	fault                               string
	accepted, once, lost, twice, refuse int
	noRecord                            int // ran, but its record is gone
	recover                             time.Duration
	note                                string
}

// setup starts the fleet over a Sentinel group, or a Cluster of three
// masters with a replica each.
func setup(t *testing.T, overCluster bool) *fleet {
	s := testenv.Shared(t)
	f := &fleet{t: t, s: s, col: &runs{active: map[string]int{}, most: map[string]int{}, done: map[string]int{}, cut: map[string]int{}},
		client: &http.Client{Timeout: time.Minute}}
	srv := httptest.NewServer(f.col)
	t.Cleanup(srv.Close)
	ref := s.Registry + "/fleet/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	if overCluster {
		c := testenv.StartRedisCluster(t, 3, 1)
		f.ha = cluster{c}
		f.redis = config.Redis{Prefix: "jobgate", Cluster: &config.RedisCluster{Addrs: c.Addrs()}}
	} else {
		g := testenv.StartSentinelGroup(t)
		f.ha = sentinel{g}
		f.redis = config.Redis{Prefix: "jobgate", Sentinel: &config.RedisSentinel{Master: testenv.SentinelMaster, Addrs: g.SentinelAddrs()}}
	}
	retry := 2
	f.fns = []config.Function{
		{Name: "short", Image: ref, Args: []string{"hold", srv.URL, "200ms"}, Network: "host", MemoryMB: 64, Retry: config.Retry{Max: &retry, DelayS: 1}},
		// Two fit a worker (capacity_mb): six spread over all three.
		{Name: "long", Image: ref, Args: []string{"hold", srv.URL, "10s"}, Network: "host", MemoryMB: 512, Retry: config.Retry{Max: &retry, DelayS: 1}},
	}
	var ready sync.WaitGroup
	f.workers = make([]*worker, 3)
	for i := range f.workers {
		ready.Add(1)
		go func() {
			defer ready.Done()
			w := &worker{name: fmt.Sprintf("w%d", i+1), host: s.StartHost(t)}
			w.cfg = f.config()
			w.cfg.Containerd.Address, w.cfg.Containerd.Namespace = w.host.Containerd, w.host.Namespace
			w.cfg.Worker.Node, w.cfg.Worker.StateDir = w.name, w.host.StateDir
			f.workers[i] = w
		}()
	}
	ready.Wait()
	for _, w := range f.workers {
		f.startWorker(w)
	}
	for range 2 {
		f.startGateway(0)
	}
	target := redisconn.Resolve(f.config().Redis)
	var err error
	if f.rdb, err = target.Client(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.rdb.Close() })
	f.records = record.NewStore(f.rdb, f.redis.KeyPrefix(), f.config().Retention())
	return f
}

// config is a fleet member's config.
func (f *fleet) config() *config.Config {
	cfg := f.s.Config(f.t, "", f.fns...)
	cfg.Redis = f.redis
	cfg.Worker.Concurrency, cfg.Worker.CapacityMB = 8, 1024
	cfg.Worker.LeaseS, cfg.Worker.NodeLostS = 6, 4
	// Repairs (an orphaned PENDING record queued again) within the
	// suite's patience rather than the default minute.
	cfg.Submit.OrphanS = 10
	return cfg
}

func (f *fleet) startWorker(w *worker) {
	w.serve = f.s.StartServe(f.t, testenv.WriteConfig(f.t, w.cfg), "worker", "")
}

// startGateway starts a gateway with redis.wait_replicas n.
func (f *fleet) startGateway(n int) {
	cfg := f.config()
	cfg.Redis.WaitReplicas, cfg.Redis.WaitTimeoutMs = n, 500
	port := testenv.FreePort(f.t)
	cfg.Gateway.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	f.gwServes = append(f.gwServes, f.s.StartServe(f.t, testenv.WriteConfig(f.t, cfg), "gateway", url))
	f.gateways = append(f.gateways, url)
}

// stop ends a serve process (SIGTERM, or SIGKILL) and waits for it.
func stop(s *testenv.Serve, sig syscall.Signal) {
	_ = s.Cmd.Process.Signal(sig)
	_, _ = s.Cmd.Process.Wait()
}

// invoke sends one invocation to gateway gw with an Idempotency-Key and
// returns its RequestId and the answer's status (0: no answer).
func (f *fleet) invoke(gw int, fn, key string) (string, int) {
	req, _ := http.NewRequest(http.MethodPost, f.gateways[gw%len(f.gateways)]+"/v1/functions/"+fn+"/invoke?wait=none", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Idempotency-Key", key)
	id := submit.DeriveRequestID("idempotency-key", fn, key)
	resp, err := f.client.Do(req)
	if err != nil {
		return id, 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return id, resp.StatusCode
}

// settle waits until every id has a terminal record, or has run with
// its record gone (a failover lost it), or d has passed without one
// more settling; it returns the
// records. An id with no record that has not run after noRecordGrace is
// settled too: lost (a worker drops a task without its record, and a
// failover loses a record and its task together, one transaction).
func (f *fleet) settle(ids []string, d time.Duration) map[string]*record.Record {
	const noRecordGrace = 20 * time.Second
	out := map[string]*record.Record{}
	start := time.Now()
	deadline, lastOpen := start.Add(d), len(ids)+1
	for {
		open := 0
		for _, id := range ids {
			if r := out[id]; r != nil && r.Status.Terminal() {
				continue
			}
			r, err := f.records.Get(context.Background(), id)
			if err == nil {
				out[id] = r
				if r.Status.Terminal() {
					continue
				}
			} else if done, _, _ := f.col.of(id); errors.Is(err, record.ErrNotFound) && (done > 0 || time.Since(start) > noRecordGrace) {
				continue
			}
			open++
		}
		if open == 0 || time.Now().After(deadline) {
			return out
		}
		if open < lastOpen {
			// Progress: a backlog drains at the machine's start rate
			// (it varies severalfold on this VM), so d bounds a stall,
			// not the whole drain.
			deadline, lastOpen = time.Now().Add(d), open
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (f *fleet) add(t *testing.T, r row) {
	t.Logf("%s: accepted %d, once %d, lost %d, record lost %d, twice %d, refused %d, recovered after %s; %s", r.fault, r.accepted, r.once, r.lost, r.noRecord, r.twice, r.refuse,
		r.recover.Round(100*time.Millisecond), r.note)
	f.rows = append(f.rows, r)
}

func (f *fleet) tally(fault string, ids []string, recs map[string]*record.Record) row {
	r := row{fault: fault, accepted: len(ids)}
	for _, id := range ids {
		rec := recs[id]
		done, _, most := f.col.of(id)
		switch {
		case rec == nil && done == 0:
			r.lost++
		case rec == nil:
			r.noRecord++
		case rec.Status != record.Finished:
			f.t.Errorf("%s: %s ended %s (%s)", fault, id, rec.Status, rec.Message)
		}
		if done == 1 {
			r.once++
		}
		if done > 1 || most > 1 {
			r.twice++
		}
	}
	return r
}

func TestSentinelFleet(t *testing.T) {
	f := setup(t, false)
	t.Run("load spread", f.loadSpread)
	t.Run("partition", f.partition)
	t.Run("host loss", f.hostLoss)
	t.Run("failover without wait_replicas", func(t *testing.T) { f.failover(t, 0) })
	t.Run("failover with wait_replicas 1", func(t *testing.T) { f.failover(t, 1) })
	f.report("fleet")
}

// The same fleet over a Redis Cluster, plus a resharding under load. (No
// partition stage: a Cluster client finds the nodes' own addresses, so a
// proxy cannot stand between one worker and Redis; the fencing it tests
// does not depend on the topology.)
func TestClusterFleet(t *testing.T) {
	f := setup(t, true)
	t.Run("load spread", f.loadSpread)
	t.Run("host loss", f.hostLoss)
	t.Run("reshard", f.reshard)
	t.Run("failover without wait_replicas", func(t *testing.T) { f.failover(t, 0) })
	t.Run("failover with wait_replicas 1", func(t *testing.T) { f.failover(t, 1) })
	f.report("fleet-cluster")
}

// report writes the table between the report file's name markers.
func (f *fleet) report(name string) {
	if *report == "" {
		return
	}
	if err := writeReport(*report, name, f.rows); err != nil {
		f.t.Fatal(err)
	}
}

// -fleet.spread jobs through both gateways: every worker runs a share,
// each job runs once.
func (f *fleet) loadSpread(t *testing.T) {
	const producers = 12
	n := *spread
	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += producers {
				var code int
				if ids[i], code = f.invoke(i, "short", fmt.Sprintf("spread-%d", i)); code != http.StatusAccepted {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d invocations not accepted", failed.Load(), n)
	}
	start := time.Now()
	recs := f.settle(ids, 5*time.Minute)
	r := f.tally(fmt.Sprintf("none (%d jobs, 3 workers, 2 gateways)", n), ids, recs)
	r.note = fmt.Sprintf("all ran within %.0f s of the last 202; share: ", time.Since(start).Seconds())
	share := map[string]int{}
	for _, rec := range recs {
		share[rec.Node]++
	}
	for _, w := range f.workers {
		r.note += fmt.Sprintf("%s %d ", w.name, share[w.name])
		// Each of three workers with free slots takes work: a third each
		// on average; a quarter of that is far below any fair spread.
		if share[w.name] < n/12 {
			t.Errorf("%s ran %d of %d jobs", w.name, share[w.name], n)
		}
	}
	f.add(t, r)
	if r.lost > 0 || r.twice > 0 || r.once != n {
		t.Fatalf("%+v", r)
	}
}

// runningOn submits n long jobs and waits until at least one runs on the
// victim; it returns their ids and the victim's. The other workers are
// paused (SIGSTOP, well within their lease) while the jobs are queued, so
// the victim takes the first ones: left to the race of three pollers, a
// worker reaching Redis through a proxy lost every job of one CI run for
// two minutes. They resume once one runs on the victim, before any fault.
func (f *fleet) runningOn(t *testing.T, tag string, n int, victim string) (ids, onVictim []string) {
	var paused []*worker
	for _, w := range f.workers {
		if w.name != victim && w.serve.Cmd.Process.Signal(syscall.SIGSTOP) == nil {
			paused = append(paused, w)
		}
	}
	resume := func() {
		for _, w := range paused {
			_ = w.serve.Cmd.Process.Signal(syscall.SIGCONT)
		}
		paused = nil
	}
	defer resume()
	for i := range n {
		id, code := f.invoke(i, "long", fmt.Sprintf("%s-%d", tag, i))
		if code != http.StatusAccepted {
			t.Fatalf("invoke: %d", code)
		}
		ids = append(ids, id)
	}
	testenv.Eventually(t, 2*time.Minute, "a long job running on "+victim, func() bool {
		onVictim = onVictim[:0]
		for _, id := range ids {
			r, err := f.records.Get(context.Background(), id)
			if err == nil && r.Status == record.Running && r.Node == victim {
				onVictim = append(onVictim, id)
			}
		}
		return len(onVictim) > 0
	})
	resume()
	return ids, onVictim
}

// takesWork sends short jobs until one runs on w (a worker just started
// must be seen to take work before a test depends on it).
func (f *fleet) takesWork(t *testing.T, w *worker) {
	for i := 0; ; i++ {
		id, code := f.invoke(i, "short", fmt.Sprintf("probe-%s-%d-%d", w.name, time.Now().UnixNano(), i))
		if code != http.StatusAccepted {
			t.Fatalf("probe: %d", code)
		}
		if rec := f.settle([]string{id}, time.Minute)[id]; rec != nil && rec.Node == w.name {
			return
		}
		if i == 30 {
			t.Fatalf("%s took none of %d jobs; its output:\n%s", w.name, i+1, w.serve.Out.String())
		}
	}
}

// A worker cut off from Redis (its own TCP proxy) while its jobs run
// fences them; the others retry them; no job runs twice at once.
func (f *fleet) partition(t *testing.T) {
	w := f.workers[2]
	master, err := f.ha.master(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// This worker reaches the master through a proxy (not Sentinel: the
	// sentinels would hand it the master's real address).
	stop(w.serve, syscall.SIGTERM)
	w.proxy = testenv.StartProxy(t, master)
	cut := *w.cfg
	cut.Redis = config.Redis{Prefix: "jobgate", Addr: w.proxy.Addr}
	w.serve = f.s.StartServe(t, testenv.WriteConfig(t, &cut), "worker", "")
	f.takesWork(t, w)

	ids, victims := f.runningOn(t, "partition", 6, w.name)
	start := time.Now()
	w.proxy.Cut()
	recs := f.settle(ids, 3*time.Minute)
	r := f.tally(fmt.Sprintf("partition %s from Redis (%d of 6 jobs on it)", w.name, len(victims)), ids, recs)
	r.recover = time.Since(start)
	for _, id := range victims {
		rec := recs[id]
		if rec == nil || rec.Node == w.name || rec.Attempt < 2 {
			t.Errorf("%s (was on %s): %+v, want retried elsewhere", id, w.name, rec)
		}
		if _, cut, _ := f.col.of(id); cut == 0 {
			t.Errorf("%s: its run on %s was not stopped (fenced)", id, w.name)
		}
	}
	f.add(t, r)
	if r.lost > 0 || r.twice > 0 || r.once != len(ids) {
		t.Errorf("%+v", r)
	}
	// Back on the Sentinel config for what follows.
	w.proxy.Restore()
	stop(w.serve, syscall.SIGTERM)
	f.startWorker(w)
}

// A host lost at once (worker, containerd, shims, jobs): its jobs end
// NodeLost and run again on the others; nothing stays RUNNING.
func (f *fleet) hostLoss(t *testing.T) {
	w := f.workers[0]
	ids, victims := f.runningOn(t, "hostloss", 6, w.name)
	start := time.Now()
	stop(w.serve, syscall.SIGKILL)
	w.host.Kill()
	recs := f.settle(ids, 3*time.Minute)
	r := f.tally(fmt.Sprintf("SIGKILL host %s: worker, containerd, shims (%d of 6 jobs on it)", w.name, len(victims)), ids, recs)
	r.recover = time.Since(start)
	for _, id := range victims {
		if rec := recs[id]; rec == nil || rec.Node == w.name || rec.Attempt < 2 {
			t.Errorf("%s (was on %s): %+v, want retried elsewhere", id, w.name, rec)
		}
	}
	f.add(t, r)
	if r.lost > 0 || r.twice > 0 || r.once != len(ids) {
		t.Errorf("%+v", r)
	}
	f.workers = f.workers[1:]
}

// Events arrive through both gateways while Redis fails over twice: a
// switchover (SENTINEL FAILOVER, CLUSTER FAILOVER), then the new master
// SIGKILLed (and restarted to rejoin as a replica). Gateways answer 503
// during a switch and recover by themselves; with wait_replicas 1 no
// accepted event is lost.
func (f *fleet) failover(t *testing.T, waitReplicas int) {
	ctx := context.Background()
	f.underLoad(t, fmt.Sprintf("failover-%d", waitReplicas), waitReplicas,
		fmt.Sprintf("Redis failover ×2 (switchover, master SIGKILL), wait_replicas %d", waitReplicas),
		func(accepted func(int64)) []time.Time {
			first, err := f.ha.master(ctx)
			if err != nil {
				t.Fatal(err)
			}
			faults := []time.Time{time.Now()}
			if err := f.ha.switchover(ctx); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, time.Minute, "the switch", func() bool { m, err := f.ha.master(ctx); return err == nil && m != first })
			accepted(20)
			f.ha.settled(t, time.Minute)
			second, _ := f.ha.master(ctx)
			faults = append(faults, time.Now())
			f.ha.node(second).Kill()
			testenv.Eventually(t, time.Minute, "the replica promoted", func() bool { m, err := f.ha.master(ctx); return err == nil && m != second })
			f.ha.node(second).Start(t)
			f.ha.settled(t, time.Minute)
			return faults
		})
}

// The slot of the queue (and of jobgate's keys), the slots below it on
// its master and 100 more move to another master while events arrive:
// nothing is lost, nothing runs twice, and a refusal is the only error a
// producer may see.
func (f *fleet) reshard(t *testing.T) {
	c := f.ha.(cluster).c
	var moved int
	r := f.underLoad(t, "reshard", 0, "Cluster resharding under load", func(accepted func(int64)) []time.Time {
		c.WaitAgreed(t, time.Minute)
		at := time.Now()
		moved = c.Reshard(t, queueKey, 100)
		return []time.Time{at}
	})
	// A write the move redirects is sent again by the submit path, not
	// answered 503.
	if r.lost > 0 || r.twice > 0 || r.refuse > 0 {
		t.Errorf("reshard: %+v", r)
	}
	f.rows[len(f.rows)-1].note += fmt.Sprintf("; %d slots moved, the queue's among them", moved)
}

// underLoad sends events through both gateways (wait_replicas
// waitReplicas) from three producers while fault runs, and for 20 more
// accepted events after; it tallies the outcome as fault's row. fault
// returns when its faults began (recovery is counted from the last one
// before the last refusal).
func (f *fleet) underLoad(t *testing.T, tag string, waitReplicas int, label string, fault func(accepted func(int64)) []time.Time) row {
	for _, s := range f.gwServes {
		stop(s, syscall.SIGTERM)
	}
	f.gwServes, f.gateways = nil, nil
	for range 2 {
		f.startGateway(waitReplicas)
	}
	type answer struct {
		id   string
		code int
		at   time.Time
	}
	var (
		mu      sync.Mutex
		answers []answer
		ok      atomic.Int64
		stopped atomic.Bool
	)
	var load sync.WaitGroup
	for p := range 3 {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; !stopped.Load(); i++ {
				id, code := f.invoke(p, "short", fmt.Sprintf("%s-%d-%d", tag, p, i))
				if code == http.StatusAccepted {
					ok.Add(1)
				}
				mu.Lock()
				answers = append(answers, answer{id, code, time.Now()})
				mu.Unlock()
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	accepted := func(more int64) {
		target := ok.Load() + more
		testenv.Eventually(t, 2*time.Minute, "invocations accepted", func() bool { return ok.Load() >= target })
	}
	accepted(20)
	faults := fault(accepted)
	accepted(20)
	stopped.Store(true)
	load.Wait()

	if why := refusals(f.gwServes); why != "" {
		t.Logf("the gateways' refusals:\n%s", why)
	}
	var ids []string
	refused, ranAnyway, other := 0, 0, 0
	var lastBad time.Time
	for _, a := range answers {
		switch a.code {
		case http.StatusAccepted:
			ids = append(ids, a.id)
		case http.StatusServiceUnavailable:
			refused++
			lastBad = a.at
		default:
			other++
			lastBad = a.at
		}
	}
	if other > 0 {
		t.Errorf("%d answers neither 202 nor 503", other)
	}
	recs := f.settle(ids, 90*time.Second)
	for _, a := range answers {
		if a.code != http.StatusAccepted {
			if done, _, _ := f.col.of(a.id); done > 0 {
				ranAnyway++
			}
		}
	}
	r := f.tally(label, ids, recs)
	r.refuse = refused
	for _, at := range faults {
		if !lastBad.IsZero() && !lastBad.Before(at) {
			r.recover = lastBad.Sub(at)
		}
	}
	r.note = fmt.Sprintf("%d refused yet ran", ranAnyway)
	f.add(t, r)
	for _, id := range ids {
		if rec := recs[id]; rec != nil && !rec.Status.Terminal() {
			t.Errorf("%s still %s", id, rec.Status)
		}
	}
	if waitReplicas > 0 && r.lost > 0 {
		t.Errorf("wait_replicas %d: %d accepted invocations lost", waitReplicas, r.lost)
	}
	return r
}

// uuids are what varies between otherwise equal error messages.
var uuids = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|127\.0\.0\.1:[0-9]+`)

// refusals counts the gateways' distinct "request failed" errors.
func refusals(serves []*testenv.Serve) string {
	count := map[string]int{}
	for _, s := range serves {
		for _, line := range strings.Split(s.Out.String(), "\n") {
			var l struct{ Message, Error string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "request failed" {
				count[uuids.ReplaceAllString(l.Error, "…")]++
			}
		}
	}
	var b strings.Builder
	for msg, n := range count {
		fmt.Fprintf(&b, "  %d× %s\n", n, msg)
	}
	return b.String()
}

// writeReport puts the table between the file's fleet markers.
func writeReport(path, name string, rows []row) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nMeasured %s by `task fleet` (internal/testkit/fleet).\n\n", time.Now().UTC().Format("2006-01-02"))
	b.WriteString("| fault | accepted (202) | ran once | lost (never ran) | ran, record lost | ran twice | refused (503) | time to recover | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %.1f s | %s |\n", r.fault, r.accepted, r.once, r.lost, r.noRecord, r.twice, r.refuse, r.recover.Seconds(), strings.TrimSpace(r.note))
	}
	return testenv.ReplaceSection(path, "<!-- "+name+":begin -->", "<!-- "+name+":end -->", b.String())
}
