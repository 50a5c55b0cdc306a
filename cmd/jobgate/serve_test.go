package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// serveEnv is a config file for `jobgate serve` subprocesses.
type serveEnv struct {
	s       *testenv.Services
	cfgPath string
	url     string
	redis   string
	prefix  string
	ns      string
}

func newServeEnv(t *testing.T, args string) *serveEnv { return newServeEnvWith(t, args, "") }

// networkNoneUnlessSet keeps the crash tests' jobs off the bridge network
// (its tests set up a bridge of their own) unless extra names a mode.
func networkNoneUnlessSet(extra string) string {
	if strings.Contains(extra, "network:") {
		return ""
	}
	return "    network: none\n"
}

func newServeEnvWith(t *testing.T, args, extra string) *serveEnv {
	t.Helper()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	e := &serveEnv{s: s, redis: testenv.Redis(t), prefix: "jobgate", ns: s.Namespace(t)}
	gw := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	e.url = "http://" + gw
	dir := t.TempDir()
	e.cfgPath = filepath.Join(dir, "jobgate.yaml")
	cfg := fmt.Sprintf(`redis: {addr: %q}
containerd: {address: %q, namespace: %q}
gateway: {listen: %q}
worker: {node: crash-node, state_dir: %q, logger_binary: %q, destinations: {allow: ["127.0.0.0/8"]}, stop_grace_s: 1}
appid: "1250000000"
uin: "100000000001"
functions:
  - name: job
    image: %q
    args: [%s]
%s%s`, e.redis, s.Containerd, e.ns, gw, filepath.Join(dir, "state"), s.JobgateBin, ref, args, networkNoneUnlessSet(extra), extra)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs `jobgate serve` and waits until it is ready.
func (e *serveEnv) start(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd, _ := e.startRole(t, "all", e.cfgPath, e.url)
	return cmd
}

// startRole runs `jobgate serve --role role` (see testenv.StartServe).
func (e *serveEnv) startRole(t *testing.T, role, cfgPath, url string) (*exec.Cmd, *testenv.SyncBuffer) {
	t.Helper()
	sv := e.s.StartServe(t, cfgPath, role, url)
	return sv.Cmd, sv.Out
}

func (e *serveEnv) cli(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(e.s.JobgateBin, args...)
	cmd.Env = append(os.Environ(), "JOBGATE_URL="+e.url)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("jobgate %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (e *serveEnv) stores() (*record.Store, *logstore.Store) {
	rdb := redis.NewClient(&redis.Options{Addr: e.redis})
	return record.NewStore(rdb, e.prefix, 72*time.Hour), logstore.NewStore(rdb, e.prefix, 72*time.Hour, 1<<20)
}

// A SIGKILL of `jobgate serve` while a job runs loses nothing: the job
// keeps running, its output is captured while no worker exists, and the
// restarted worker carries it to FINISHED exactly once.
func TestSIGKILLMidRunFinishesOnce(t *testing.T) {
	t.Parallel()
	e := newServeEnv(t, `echo, a, sleep, 1500ms, echo, b, sleep, 1500ms, echo, c`)
	serve, out := e.startRole(t, "all", e.cfgPath, e.url)
	killMidRun(t, e, serve, out)
}

// The same for a job started in a provisioned (warm) instance: its
// container id is the pool's, its log and record the invocation's.
func TestSIGKILLMidRunProvisioned(t *testing.T) {
	t.Parallel()
	e := newServeEnvWith(t, `echo, a, sleep, 1500ms, echo, b, sleep, 1500ms, echo, c`, "    provisioned: 1\n")
	serve, out := e.startRole(t, "all", e.cfgPath, e.url)
	testenv.Eventually(t, 30*time.Second, "a warm instance", func() bool {
		resp, err := http.Get(e.url + "/readyz")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `"ready":1`)
	})
	killMidRun(t, e, serve, out)
	if !strings.Contains(out.String(), `"provisioned":true`) {
		t.Fatalf("the job did not start in a warm instance:\n%s", out.String())
	}
}

// invokeAndKill invokes the job with event, waits until the worker has
// started it, and SIGKILLs `jobgate serve`.
func invokeAndKill(t *testing.T, e *serveEnv, serve *exec.Cmd, out *testenv.SyncBuffer, event string) record.Record {
	t.Helper()
	var rec record.Record
	if err := json.Unmarshal([]byte(e.cli(t, event, "invoke", "job", "--event", "-")), &rec); err != nil || rec.Status != record.Running {
		t.Fatalf("invoke: %+v %v", rec, err)
	}
	// The worker logs the start just after recording RUNNING (which
	// answered the invoke): let that line out before the kill.
	testenv.Eventually(t, 10*time.Second, "the worker's start line", func() bool {
		return strings.Contains(out.String(), `"message":"instance started"`)
	})
	if err := serve.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = serve.Wait()
	return rec
}

func killMidRun(t *testing.T, e *serveEnv, serve *exec.Cmd, out *testenv.SyncBuffer) {
	t.Helper()
	rec := invokeAndKill(t, e, serve, out, `{"crash":"test"}`)
	records, logs := e.stores()
	// "b" is printed, and captured, while no jobgate runs.
	testenv.Eventually(t, 10*time.Second, `"b" in the log with no jobgate running`, func() bool {
		lines, _, _ := logs.Lines(t.Context(), rec.RequestId)
		for _, l := range lines {
			if l.Line == "b" {
				return true
			}
		}
		return false
	})
	e.start(t)

	var end *record.Record
	testenv.Eventually(t, 30*time.Second, "the invocation to end", func() bool {
		r, err := records.Get(t.Context(), rec.RequestId)
		end = r
		return err == nil && r.Status.Terminal()
	})
	if end.Status != record.Finished || end.StatusCode != 200 || *end.ExitCode != 0 {
		t.Fatalf("end: %+v", end)
	}
	lines, done, err := logs.Lines(t.Context(), rec.RequestId)
	if err != nil || !done {
		t.Fatalf("logs done=%v err=%v", done, err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, strings.Fields(l.Line)[0])
	}
	if strings.Join(got, ",") != "START,a,b,c,END,Report" {
		t.Fatalf("log after crash: %v", got)
	}
	// The CLI shows the same log.
	printed := e.cli(t, "", "logs", rec.RequestId)
	for _, w := range []string{"stdout   a", "stdout   b", "stdout   c", "END RequestId:" + rec.RequestId} {
		if !strings.Contains(printed, w) {
			t.Fatalf("jobgate logs lacks %q:\n%s", w, printed)
		}
	}
	st := e.cli(t, "", "status", rec.RequestId)
	if !strings.Contains(st, `"Status": "FINISHED"`) {
		t.Fatalf("jobgate status: %s", st)
	}
	if ls := e.cli(t, "", "ls", "--status", "FINISHED"); !strings.Contains(ls, rec.RequestId) {
		t.Fatalf("jobgate ls: %s", ls)
	}
}

// A worker SIGKILLed after it recorded an invocation's final status and
// before it queued the status's destinations: the restarted worker,
// completing the attempt again (the instance is still there), finds the
// status its predecessor wrote, finishes the end steps and delivers it,
// once.
func TestSIGKILLBeforeTheDestinationIsQueued(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var deliveries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		deliveries = append(deliveries, r.Header.Get("X-Jobgate-Delivery"))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	got := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), deliveries...) }
	e := newServeEnvWith(t, `echo, a, sleep, 2s`, fmt.Sprintf("    on_success: [{url: %q}]\n", srv.URL+"/done"))
	serve, out := e.startRole(t, "all", e.cfgPath, e.url)
	rec := invokeAndKill(t, e, serve, out, `{}`)
	// What the killed worker wrote last: the final status (as its end
	// steps do first); nothing was queued for the destination.
	records, _ := e.stores()
	code, exit, now := 200, 0, time.Now()
	if err := records.UpdateFrom(t.Context(), rec.RequestId, []record.Status{record.Running}, record.Update{
		Status: record.Finished, StatusCode: &code, ExitCode: &exit, EndTime: &now}); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	testenv.EventuallyNoError(t, time.Minute, "the delivery recorded", func() error {
		r, err := records.Get(t.Context(), rec.RequestId)
		if err != nil {
			return err
		}
		if len(r.Destinations) != 1 || r.Destinations[0].Status != record.DestinationDelivered {
			return fmt.Errorf("destinations %+v", r.Destinations)
		}
		return nil
	})
	want := rec.RequestId + "~1~success~0"
	if d := got(); len(d) != 1 || d[0] != want {
		t.Fatalf("deliveries %v, want one: %s", d, want)
	}
}

func TestValidateCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("functions:\n  - name: x\n    image: a/b:1\n    memroy_mb: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := testenv.Shared(t).JobgateBin
	out, err := exec.Command(bin, "validate", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), bad+":4: functions[0].memroy_mb: unknown key") || !strings.Contains(string(out), "memroy_mb") {
		t.Fatalf("validate bad: %v\n%s", err, out)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("functions:\n  - name: x\n    image: a/b:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "validate", good).CombinedOutput(); err != nil {
		t.Fatalf("validate good: %v\n%s", err, out)
	}
	_ = config.Config{}
}

// Two gateways fire the same every-second timer for 30 s: each instant
// runs exactly once.
func TestTwoGatewaysFireEachInstantOnce(t *testing.T) {
	t.Parallel()
	e := newServeEnvWith(t, `echo, tick`, "    triggers: [{type: timer, name: every-second, cron: '* * * * * * *'}]\n")
	e.startRole(t, "worker", e.cfgPath, "")
	raw, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var outs []*testenv.SyncBuffer
	var gws []*exec.Cmd
	for i := 0; i < 2; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		path := filepath.Join(t.TempDir(), "gw.yaml")
		cfg := strings.Replace(string(raw), strings.TrimPrefix(e.url, "http://"), addr, 1)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd, out := e.startRole(t, "gateway", path, "http://"+addr)
		gws, outs = append(gws, cmd), append(outs, out)
	}
	// Both gateways race for every instant until ten have fired.
	records, logs := e.stores()
	const fires = 10
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("%d fires of an every-second timer", fires), func() bool {
		recs, _, err := records.List(t.Context(), record.Filter{Function: "job"}, fires, "")
		return err == nil && len(recs) >= fires
	})
	for _, g := range gws {
		_ = g.Process.Signal(syscall.SIGTERM)
		_ = g.Wait()
	}
	var recs []*record.Record
	cursor := ""
	for {
		page, next, err := records.List(t.Context(), record.Filter{Function: "job"}, 100, cursor)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(recs) < fires {
		t.Fatalf("%d fires recorded, want at least %d", len(recs), fires)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		ev, err := records.Event(t.Context(), r.RequestId)
		if err != nil {
			t.Fatal(err)
		}
		var te struct{ Time string }
		_ = json.Unmarshal(ev, &te)
		if seen[te.Time] {
			t.Fatalf("instant %s queued twice", te.Time)
		}
		seen[te.Time] = true
	}
	// Every second between the first and the last instant is there.
	var first, last time.Time
	for ts := range seen {
		v, _ := time.Parse(time.RFC3339, ts)
		if first.IsZero() || v.Before(first) {
			first = v
		}
		if v.After(last) {
			last = v
		}
	}
	if n := int(last.Sub(first)/time.Second) + 1; n != len(seen) {
		t.Fatalf("%d instants between %s and %s, %d fired", n, first, last, len(seen))
	}
	// Each ran exactly once.
	for _, r := range recs {
		var got *record.Record
		testenv.Eventually(t, 30*time.Second, "fire "+r.RequestId+" to end", func() bool {
			got, _ = records.Get(t.Context(), r.RequestId)
			return got != nil && got.Status.Terminal()
		})
		if got.Status != record.Finished {
			t.Fatalf("%+v", got)
		}
		lines, _, _ := logs.Lines(t.Context(), r.RequestId)
		starts := 0
		for _, l := range lines {
			if strings.HasPrefix(l.Line, "START ") {
				starts++
			}
		}
		if starts != 1 {
			t.Fatalf("%s started %d times", r.RequestId, starts)
		}
	}
	fired := []int{strings.Count(outs[0].String(), "timer fired"), strings.Count(outs[1].String(), "timer fired")}
	if fired[0]+fired[1] != len(recs) {
		t.Fatalf("gateways report %v new fires for %d records", fired, len(recs))
	}
	t.Logf("%d instants, each run once; new fires per gateway %v (the rest were duplicates)", len(recs), fired)
}

// SIGHUP reloads every role without a restart (issue 12): a function and
// its HTTP and Redis Streams triggers added, another HTTP trigger removed,
// then an invalid file refused with the running config kept.
func TestSIGHUPReloadsEveryRole(t *testing.T) {
	t.Parallel()
	e := newServeEnvWith(t, `"echo", "ran"`, `    triggers: [{type: http, name: old, path: /hooks/old}]
`)
	cmd, logs := e.startRole(t, "all", e.cfgPath, e.url)
	post := func(path string) int {
		resp, err := http.Post(e.url+path, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/hooks/old"); code != 202 {
		t.Fatalf("before: /hooks/old %d", code)
	}
	base, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	oldTrigger := "    triggers: [{type: http, name: old, path: /hooks/old}]\n"
	next := strings.Replace(string(base), oldTrigger, "", 1) + `  - name: added
    image: ` + e.s.Registry + `/test/job:1
    args: ["echo", "added ran"]
    network: none
    triggers:
      - {type: http, name: new, path: /hooks/new}
      - {type: redis_stream, name: s, stream: added-in, group: jobgate, start: earliest}
`
	if err := os.WriteFile(e.cfgPath, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the added function and its route", func() bool {
		return post("/hooks/new") == 202
	})
	if code := post("/hooks/old"); code != 404 {
		t.Fatalf("the removed trigger still answers: %d", code)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.redis})
	defer rdb.Close()
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "added-in", Values: map[string]any{"body": "via stream"}}).Err(); err != nil {
		t.Fatal(err)
	}
	records, _ := e.stores()
	testenv.EventuallyNoError(t, time.Minute, "the stream event to run", func() error {
		recs, _, err := records.List(context.Background(), record.Filter{Function: "added"}, 10, "")
		if err != nil {
			return err
		}
		done := map[string]bool{}
		for _, r := range recs {
			if r.Status == record.Finished {
				done[r.RequestSource] = true
			}
		}
		if !done["TRIGGER_HTTP"] || !done["TRIGGER_REDIS_STREAM"] {
			return fmt.Errorf("finished so far: %v", done)
		}
		return nil
	})
	if out := e.cli(t, "", "functions", "ls", "-o", "name"); out != "added\njob\n" {
		t.Fatalf("functions after reload: %q", out)
	}
	// An invalid file is refused: the running config stays.
	if err := os.WriteFile(e.cfgPath, []byte(next+"  - name: broken\n    imgae: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the refusal in the log", func() bool {
		return strings.Contains(logs.String(), "config not reloaded") && strings.Contains(logs.String(), "imgae")
	})
	if out := e.cli(t, "", "functions", "ls", "-o", "name"); out != "added\njob\n" {
		t.Fatalf("functions after a refused reload: %q", out)
	}
	if code := post("/hooks/new"); code != 202 {
		t.Fatalf("after a refused reload: %d", code)
	}
}

// netCounts is what a worker's bridge network holds on this host:
// namespaces and address leases under its state dir, ports on its
// bridge, and jobgate's nftables elements (jobs map, ports set).
type netCounts struct{ Namespaces, Leases, Veths, JobElements, PortElements int }

func countNet(t *testing.T, state, bridge string) netCounts {
	t.Helper()
	var c netCounts
	ns, _ := os.ReadDir(filepath.Join(state, "net", "ns"))
	c.Namespaces = len(ns)
	leases, _ := filepath.Glob(filepath.Join(state, "net", "ipam", "*", "*.*.*.*"))
	c.Leases = len(leases)
	out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).CombinedOutput()
	c.Veths = strings.Count(string(out), "\n")
	out, _ = exec.Command("nft", "list", "map", "inet", "jobgate-"+bridge, "jobs").CombinedOutput()
	c.JobElements = strings.Count(string(out), ": jump")
	out, _ = exec.Command("nft", "list", "set", "bridge", "jobgate-"+bridge, "ports").CombinedOutput()
	c.PortElements = strings.Count(string(out), `"veth`)
	return c
}

// A SIGKILLed worker leaks no network: the job it ran keeps its network
// until it ends under the restarted worker, the namespace the killed
// process had made ready is swept, and a clean stop leaves nothing.
func TestSIGKILLLeaksNoNetwork(t *testing.T) {
	t.Parallel()
	fake := testenv.FakeInternet(t, false)
	jn := testenv.JobNetwork(t, fake.Addr)
	e := newServeEnvWith(t, `"addrs", "get", "http://`+fake.Name+`/", "sleep", "4s", "echo", "done"`, "    network: bridge\n")
	raw, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	withNet := strings.Replace(string(raw), "stop_grace_s: 1}", fmt.Sprintf("stop_grace_s: 1, network: {bridge: %s, subnet: %q, dns: [%q], ready: 1}}", jn.Bridge, jn.Subnet, fake.Addr), 1)
	if err := os.WriteFile(e.cfgPath, []byte(withNet), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(filepath.Dir(e.cfgPath), "state")
	idle := netCounts{Namespaces: 1, Leases: 1, Veths: 1, PortElements: 1} // one namespace made ready
	waitNet := func(what string, want netCounts) {
		t.Helper()
		testenv.EventuallyNoError(t, 30*time.Second, what, func() error {
			if got := countNet(t, state, jn.Bridge); got != want {
				return fmt.Errorf("%+v, want %+v", got, want)
			}
			return nil
		})
	}
	serve, out := e.startRole(t, "all", e.cfgPath, e.url)
	waitNet("a ready namespace", idle)
	rec := invokeAndKill(t, e, serve, out, `{}`)
	running := countNet(t, state, jn.Bridge)
	if running.JobElements != 1 || running.Namespaces < 2 {
		t.Fatalf("while the job runs with no worker: %+v, want its namespace and policy element beside the ready one", running)
	}
	second := e.start(t)
	records, _ := e.stores()
	var end *record.Record
	testenv.Eventually(t, 60*time.Second, "the invocation to end", func() bool {
		r, err := records.Get(t.Context(), rec.RequestId)
		end = r
		return err == nil && r.Status.Terminal()
	})
	if end.Status != record.Finished {
		t.Fatalf("end: %+v", end)
	}
	lines, _, _ := logsOf(e).Lines(t.Context(), rec.RequestId)
	var fetched bool
	for _, l := range lines {
		fetched = fetched || strings.HasPrefix(l.Line, "get 200 fake-internet")
	}
	if !fetched {
		t.Errorf("the job did not reach the fake internet: %+v", lines)
	}
	// Only ready namespaces: the new one's, and the job's own if it was
	// recycled (a job without added capabilities cannot change its
	// namespace); the killed process's ready one is swept.
	testenv.EventuallyNoError(t, 30*time.Second, "only ready namespaces", func() error {
		c := countNet(t, state, jn.Bridge)
		if c.JobElements != 0 || c.Namespaces < 1 || c.Namespaces > 2 || c.Leases != c.Namespaces || c.Veths != c.Namespaces || c.PortElements != c.Namespaces {
			return fmt.Errorf("%+v", c)
		}
		return nil
	})
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitNet("nothing after a clean stop", netCounts{})
}

func logsOf(e *serveEnv) *logstore.Store {
	_, logs := e.stores()
	return logs
}
