package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/imagebuild"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

func intp(n int) *int { return &n }

// A child is OOM-killed while PID 1 exits 0: still 434, from the kernel's
// OOM report, not the exit code.
func TestOOMKillIs434EvenWhenPID1ExitsZero(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "hog", Image: jobImage(t), MemoryMB: 64, Retry: noRetry,
		Args: []string{"spawn", "alloc", "256"}})
	end := run(t, st, "hog", []byte(`{}`))
	if end.Status != record.Failed || end.StatusCode != 434 || *end.ExitCode != 0 || !strings.Contains(end.Message, "64 MB") {
		t.Fatalf("%+v", end)
	}
	if end.MemUsageBytes < 32<<20 || end.MemUsageBytes > 65<<20 { // usage may pass the limit by a few pages
		t.Fatalf("peak memory %d, want near the 64 MiB limit", end.MemUsageBytes)
	}
	report := st.Lines(t, end.RequestId)
	if last := report[len(report)-1].Line; !strings.Contains(last, "Memory:64MB") || !strings.Contains(last, "MemUsage:") {
		t.Fatalf("report line %q", last)
	}
}

func terminate(t *testing.T, st *testenv.Stack, id string, grace bool, want int) (*record.Record, time.Duration) {
	t.Helper()
	t0 := time.Now()
	code, body := st.Do(t, "POST", "/v1/invocations/"+id+"/terminate", []byte(fmt.Sprintf(`{"GraceShutdown":%t}`, grace)), nil)
	took := time.Since(t0)
	if code != want {
		t.Fatalf("terminate: %d %s", code, body)
	}
	var r record.Record
	_ = json.Unmarshal(body, &r)
	return &r, took
}

func TestTerminate(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	deadRegistry := fmt.Sprintf("127.0.0.1:%d/none/x:1", testenv.FreePort(t))
	st := testenv.StartStack(t,
		config.Function{Name: "sleeper", Image: img, Args: []string{"echo", "started", "sleep", "1h"}},
		config.Function{Name: "polite", Image: img, Args: []string{"onterm", "0", "echo", "started", "sleep", "1h"}},
		config.Function{Name: "stuck", Image: deadRegistry})

	t.Run("running, SIGKILL", func(t *testing.T) {
		rec := st.Invoke(t, "sleeper", "", []byte(`{}`), 200)
		end, took := terminate(t, st, rec.RequestId, false, 200)
		if end.Status != record.Aborted || end.StatusCode != 499 || end.Attempt != 1 {
			t.Fatalf("%+v", end)
		}
		t.Logf("terminate → ABORTED in %v", took)
	})
	t.Run("running, grace", func(t *testing.T) {
		rec := st.Invoke(t, "polite", "", []byte(`{}`), 200)
		// "started" is printed once its SIGTERM handler is installed.
		testenv.Eventually(t, 10*time.Second, "the job's first line", func() bool { return len(st.Stdout(t, rec.RequestId)) > 0 })
		end, took := terminate(t, st, rec.RequestId, true, 200)
		if end.Status != record.Aborted || end.StatusCode != 499 || *end.ExitCode != 0 || !strings.Contains(end.Message, "GraceShutdown=true") {
			t.Fatalf("%+v", end)
		}
		if out := st.Stdout(t, rec.RequestId); len(out) != 2 || out[1] != "got SIGTERM" {
			t.Fatalf("job output %v", out)
		}
		t.Logf("graceful terminate → ABORTED in %v", took)
	})
	t.Run("pending", func(t *testing.T) {
		rec := st.Invoke(t, "stuck", "?wait=none", []byte(`{}`), 202)
		end, _ := terminate(t, st, rec.RequestId, false, 200)
		if end.Status != record.Aborted || end.StatusCode != 499 || end.StartTime != "" {
			t.Fatalf("%+v", end)
		}
		// Its retry comes due and must not start it: the handler
		// acknowledges the task of an ended invocation.
		insp := asynq.NewInspectorFromRedisClient(st.Node.Redis())
		testenv.Eventually(t, 30*time.Second, "the cancelled task acknowledged", func() bool {
			info, err := insp.GetTaskInfo(queue.Name, rec.RequestId)
			return err != nil || info.State == asynq.TaskStateCompleted
		})
		if r, _ := st.Records.Get(t.Context(), rec.RequestId); r.Status != record.Aborted {
			t.Fatalf("after the retry: %+v", r)
		}
	})
	t.Run("ended", func(t *testing.T) {
		rec := st.Invoke(t, "sleeper", "", []byte(`{}`), 200)
		terminate(t, st, rec.RequestId, false, 200)
		terminate(t, st, rec.RequestId, false, 409)
	})
}

func TestDiskQuotaExceeded(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "filler", Image: jobImage(t), Retry: noRetry,
		Args: []string{"write", "600", "/tmp/big", "sleep", "1h"}})
	end := run(t, st, "filler", []byte(`{}`))
	if end.Status != record.Failed || end.StatusCode != 405 || !strings.HasPrefix(end.Message, "DiskQuotaExceeded") {
		t.Fatalf("%+v", end)
	}
	// The watchdog's figure for docs/SECURITY.md: how far past the limit
	// the layer grew before the poll caught it.
	var used, limit int64
	if _, err := fmt.Sscanf(end.Message, "DiskQuotaExceeded: the writable layer holds %d bytes, over the limit of %d", &used, &limit); err != nil || used <= limit {
		t.Fatalf("message %q: %v", end.Message, err)
	}
	t.Logf("caught %.0f MiB past the %d MiB limit, %d ms after the start (disk_poll_ms %d)", float64(used-limit)/(1<<20), limit>>20, end.DurationMs, st.Config.Worker.DiskPollMs)
}

func TestRetriesDeadLetterAndRedrive(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "flaky", Image: jobImage(t), Retry: config.Retry{Max: intp(2), DelayS: 1},
		Args: []string{"env", "JOBGATE_ATTEMPT", "exit", "1"}})
	rec := st.Invoke(t, "flaky", "?wait=none", []byte(`{"order":7}`), 202)
	end := st.WaitEnd(t, rec.RequestId, 60*time.Second)
	if end.Status != record.Failed || end.StatusCode != 439 || end.Attempt != 3 || len(end.Attempts) != 2 {
		t.Fatalf("%+v", end)
	}
	for i, a := range end.Attempts {
		if a.Attempt != i+1 || a.StatusCode != 439 || *a.ExitCode != 1 || a.StartTime == "" {
			t.Fatalf("attempt %d: %+v", i+1, a)
		}
	}
	// One log per attempt, each with its own JOBGATE_ATTEMPT.
	for n := 1; n <= 3; n++ {
		code, body := st.Do(t, "GET", fmt.Sprintf("/v1/invocations/%s/logs?attempt=%d", rec.RequestId, n), nil, nil)
		if code != 200 || !strings.Contains(string(body), fmt.Sprintf("JOBGATE_ATTEMPT=%d", n)) || strings.Count(string(body), "START ") != 1 {
			t.Fatalf("log of attempt %d: %d %s", n, code, body)
		}
	}
	dl := getDeadLetter(t, st, rec.RequestId)
	if dl.ErrorCode != 439 || dl.Body.RetryNum != 2 || dl.Body.ClientContext != `{"order":7}` || dl.Body.FunctionName != "flaky" {
		t.Fatalf("dead letter %+v", dl)
	}
	// Redrive: the same RequestId runs again as attempt 4.
	code, body := st.Do(t, "POST", "/v1/deadletters/"+rec.RequestId+"/redrive", nil, nil)
	if code != 202 {
		t.Fatalf("redrive: %d %s", code, body)
	}
	if code, _ := st.Do(t, "GET", "/v1/deadletters/"+rec.RequestId, nil, nil); code != 404 {
		t.Fatalf("still dead-lettered after redrive: %d", code)
	}
	var r *record.Record
	testenv.Eventually(t, 30*time.Second, "the redriven attempt 4 to end", func() bool {
		r, _ = st.Records.Get(t.Context(), rec.RequestId)
		return r != nil && r.Attempt == 4 && r.Status.Terminal()
	})
	if r.Status != record.Failed || len(r.Attempts) != 3 {
		t.Fatalf("after redrive %+v", r)
	}
	if out := st.Stdout(t, record.InstanceID(rec.RequestId, 4)); len(out) != 1 || out[0] != "JOBGATE_ATTEMPT=4" {
		t.Fatalf("attempt 4 output %v", out)
	}
	getDeadLetter(t, st, rec.RequestId) // back in the list
	if code, _ := st.Do(t, "DELETE", "/v1/deadletters/"+rec.RequestId, nil, nil); code != 204 {
		t.Fatalf("purge: %d", code)
	}
}

func getDeadLetter(t *testing.T, st *testenv.Stack, id string) *deadletter.Entry {
	t.Helper()
	var body []byte
	testenv.Eventually(t, 10*time.Second, "dead letter "+id, func() bool {
		var code int
		code, body = st.Do(t, "GET", "/v1/deadletters/"+id, nil, nil)
		return code == 200
	})
	var e deadletter.Entry
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	return &e
}

// maxOverlap is the most invocations whose [StartTime, EndTime] overlap.
func maxOverlap(t *testing.T, recs []*record.Record) int {
	best := 0
	for _, a := range recs {
		n := 0
		at := parse(t, a.StartTime)
		for _, b := range recs {
			if !parse(t, b.StartTime).After(at) && parse(t, b.EndTime).After(at) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

func parse(t *testing.T, s string) time.Time {
	v, err := time.Parse(record.TimeFormat, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return v
}

func runAll(t *testing.T, st *testenv.Stack, fn string, n int) []*record.Record {
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, st.Invoke(t, fn, "?wait=none", []byte(`{}`), 202).RequestId)
	}
	var out []*record.Record
	for _, id := range ids {
		end := st.WaitEnd(t, id, 60*time.Second)
		if end.Status != record.Finished {
			t.Fatalf("%+v", end)
		}
		out = append(out, end)
	}
	return out
}

func TestFunctionConcurrencyLimit(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "one", Image: jobImage(t), Concurrency: 1, Args: []string{"sleep", "1s"}})
	cfg.Worker.LimitRetryS = 1
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	recs := runAll(t, st, "one", 3)
	if n := maxOverlap(t, recs); n != 1 {
		t.Fatalf("%d ran at once with concurrency 1", n)
	}
}

func TestNodeCapacity(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "m", Image: jobImage(t), MemoryMB: 128, Args: []string{"sleep", "1s"}})
	cfg.Worker.CapacityMB = 256
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	recs := runAll(t, st, "m", 5)
	if n := maxOverlap(t, recs); n > 2 {
		t.Fatalf("%d × 128 MB ran at once with capacity_mb 256", n)
	}
}

func TestEventOlderThanMaxAgeIsNotStarted(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t)
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: fmt.Sprintf("127.0.0.1:%d/x/y:1", port), MaxEventAgeS: 3600})
	rec := st.Invoke(t, "fn", "?wait=none", []byte(`{}`), 202)
	// Age the event: it was queued two hours ago, and has been retrying.
	old := time.Now().Add(-2 * time.Hour).UTC().Format(record.TimeFormat)
	if err := st.Node.Redis().HSet(context.Background(), st.Config.Redis.KeyPrefix()+":inv:"+rec.RequestId, "EnqueueTime", old).Err(); err != nil {
		t.Fatal(err)
	}
	end := st.WaitEnd(t, rec.RequestId, 30*time.Second)
	if end.Status != record.Failed || !strings.Contains(end.Message, "event expired") || end.StartTime != "" {
		t.Fatalf("%+v", end)
	}
	dl := getDeadLetter(t, st, rec.RequestId)
	if !strings.Contains(dl.ErrorMessage, "max_event_age_s=3600") {
		t.Fatalf("%+v", dl)
	}
}

// Every policy refusal happens from the manifests: the registry serves no
// blob at all.
func TestImagePolicyDownloadsNoBlob(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	big := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:%s"},
"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1073741824,"digest":"sha256:%s"}]}`,
		strings.Repeat("a", 64), strings.Repeat("b", 64))
	if err := imagebuild.PushRawManifest(s.Registry, "nb/huge", "1", "application/vnd.oci.image.manifest.v1+json", []byte(big)); err != nil {
		t.Fatal(err)
	}
	arm, err := imagebuild.RandomImage(1024, "linux", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imagebuild.Push(s.Registry+"/nb/arm:1", arm); err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.PushSchema1(s.Registry, "nb/legacy", "1"); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartStack(t,
		config.Function{Name: "huge", Image: s.Registry + "/nb/huge:1"},
		config.Function{Name: "arm", Image: s.Registry + "/nb/arm:1"},
		config.Function{Name: "legacy", Image: s.Registry + "/nb/legacy:1"},
		config.Function{Name: "missing", Image: s.Registry + "/nb/missing:1"})
	before := map[string]int{}
	for _, repo := range []string{"nb/huge", "nb/arm", "nb/legacy", "nb/missing"} {
		before[repo] = s.BlobGets(repo)
	}
	for fn, want := range map[string]string{"huge": "compressed size 1073741826 bytes, limit 1073741824", "arm": "linux/arm64",
		"legacy": "schema 1", "missing": "not found"} {
		code, body := st.Do(t, "POST", "/v1/functions/"+fn+"/invoke", []byte(`{}`), nil)
		if code != 502 || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d %s", fn, code, body)
		}
	}
	for repo, n := range before {
		// arm's config blob is read (a single manifest names its platform
		// only there); no layer of any of them is.
		allowed := 0
		if repo == "nb/arm" {
			allowed = 1
		}
		if got := s.BlobGets(repo) - n; got > allowed {
			t.Fatalf("%s: %d blob downloads", repo, got)
		}
	}
}

func TestPullTimeoutIs447(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/slow/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	s.SlowBlobs("slow/job", 5*time.Second)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: ref})
	cfg.Worker.PullTimeoutS = 1
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	code, body := st.Do(t, "POST", "/v1/functions/fn/invoke", []byte(`{}`), nil)
	if code != 504 || !strings.Contains(string(body), "PullImageTimeOut") {
		t.Fatalf("%d %s", code, body)
	}
}

// The registry is down when the event arrives and comes back 20 s later:
// the event is retried (not failed) and runs.
func TestRegistryComingBackRunsTheEvent(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: host + "/late/job:1", Args: []string{"echo", "ran"}})
	rec := st.Invoke(t, "fn", "?wait=none", []byte(`{}`), 202)
	// While the registry is down the event waits, PENDING, retried with
	// backoff; once it is up the next retry runs it.
	testenv.Eventually(t, 20*time.Second, "a retry while the registry is down", func() bool {
		r, _ := st.Records.Get(t.Context(), rec.RequestId)
		return r != nil && r.Status == record.Pending && strings.Contains(r.Message, "retrying after")
	})
	ln, err := net.Listen("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	// Until the push is complete the registry answers the worker's
	// (containerd's) manifest requests 503 (still coming up), not 404 (an
	// image that does not exist, which is final).
	var pushed atomic.Bool
	reg := registry.New()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !pushed.Load() && strings.Contains(r.URL.Path, "/manifests/") && strings.HasPrefix(r.UserAgent(), "containerd") {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	if _, err := testjob.Push(host + "/late/job:1"); err != nil {
		t.Fatal(err)
	}
	pushed.Store(true)
	end := st.WaitEnd(t, rec.RequestId, 60*time.Second)
	if end.Status != record.Finished || len(st.Stdout(t, rec.RequestId)) != 1 {
		t.Fatalf("%+v", end)
	}
}

// Registry credentials: username + password from the environment, or a
// docker config.json; wrong ones are a permanent 444.
func TestRegistryAuth(t *testing.T) {
	var mu sync.Mutex
	inner := registry.New()
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		mu.Lock()
		defer mu.Unlock()
		if !ok || u != "robot" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer auth.Close()
	host := strings.TrimPrefix(auth.URL, "http://")
	bin, err := testjob.Binary()
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagebuild.Build(imagebuild.Spec{Files: map[string]imagebuild.File{"bin/job": {Content: bin, Mode: 0o755}}, Entrypoint: []string{"/bin/job", "echo", "authed"}})
	if err != nil {
		t.Fatal(err)
	}
	// Push straight to the inner registry (no auth) through a plain server.
	plain := httptest.NewServer(inner)
	defer plain.Close()
	if _, err := imagebuild.Push(strings.TrimPrefix(plain.URL, "http://")+"/priv/job:1", img); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JG_TEST_REG_PASSWORD", "s3cret")
	t.Setenv("JG_TEST_BAD_PASSWORD", "nope")
	s := testenv.Shared(t)
	dir := t.TempDir()
	dockerCfg := dir + "/config.json"
	if err := writeFile(dockerCfg, fmt.Sprintf(`{"auths":{%q:{"auth":"cm9ib3Q6czNjcmV0"}}}`, host)); err != nil { // robot:s3cret
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		reg    config.Registry
		docker string
		ok     bool
	}{
		"password_env":  {reg: config.Registry{Username: "robot", PasswordEnv: "JG_TEST_REG_PASSWORD"}, ok: true},
		"docker config": {docker: dockerCfg, ok: true},
		"wrong":         {reg: config.Registry{Username: "robot", PasswordEnv: "JG_TEST_BAD_PASSWORD"}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: host + "/priv/job:1"})
			cfg.Registries = map[string]config.Registry{host: c.reg}
			cfg.Worker.DockerConfig = c.docker
			st := testenv.StartStackWith(t, s, cfg, node.Options{})
			code, body := st.Do(t, "POST", "/v1/functions/fn/invoke", []byte(`{}`), nil)
			if c.ok && code != 200 || !c.ok && (code != 502 || !strings.Contains(string(body), "credentials")) {
				t.Fatalf("%d %s", code, body)
			}
			if strings.Contains(string(body), "s3cret") || strings.Contains(string(body), "nope") {
				t.Fatalf("a secret leaked into the answer: %s", body)
			}
		})
	}
}

// What a job may do: no new privileges, seccomp filtering, containerd's
// default capability set without CAP_NET_RAW (cap_add gives it back), and
// no network but loopback.
func TestHardening(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t,
		config.Function{Name: "probe", Image: jobImage(t), Args: []string{"status", "netifs"}},
		config.Function{Name: "raw", Image: jobImage(t), Args: []string{"status"}, CapAdd: []string{"CAP_NET_RAW"}})
	end := run(t, st, "probe", []byte(`{}`))
	got := strings.Join(st.Stdout(t, end.RequestId), "|")
	// CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD SETGID SETUID SETFCAP SETPCAP
	// NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE (containerd's default
	// set, 0xa80425fb, less NET_RAW, bit 13).
	want := "CapEff: 00000000a80405fb|NoNewPrivs: 1|Seccomp: 2|if lo"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	end = run(t, st, "raw", []byte(`{}`))
	if got := st.Stdout(t, end.RequestId); len(got) < 1 || got[0] != "CapEff: 00000000a80425fb" {
		t.Fatalf("cap_add CAP_NET_RAW: %v", got)
	}
}

// Per-function isolation: user, a read-only rootfs with a /tmp tmpfs the
// kernel caps at the disk limit (no polling gap), and a CFS quota for cpu.
func TestIsolationKeys(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	locked := config.Function{Name: "locked", Image: jobImage(t), Retry: noRetry, User: "1000:2000", ReadonlyRootfs: true, CPU: 0.5,
		Args: []string{"whoami", "write", "1", "/tmp/ok", "echo", "tmp ok", "sleep", "2s", "write", "1", "/denied"}}
	filler := config.Function{Name: "filler", Image: jobImage(t), Retry: noRetry, ReadonlyRootfs: true,
		Args: []string{"write", "20", "/tmp/big"}}
	cfg := s.Config(t, testenv.Redis(t), locked, filler)
	cfg.Worker.DiskLimitMB = 8
	st := testenv.StartStackWith(t, s, cfg, node.Options{})

	rec := st.Invoke(t, "locked", "", []byte(`{}`), 200)
	// While it runs, its cgroup has the quota (cgroup v1 here; v2's cpu.max).
	quota := func() string {
		for _, p := range []string{"/sys/fs/cgroup/cpu/" + cfg.Containerd.Namespace + "/" + rec.RequestId + "/cpu.cfs_quota_us",
			"/sys/fs/cgroup/" + cfg.Containerd.Namespace + "/" + rec.RequestId + "/cpu.max"} {
			if b, err := os.ReadFile(p); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
	if q := quota(); q != "50000" && q != "50000 100000" {
		t.Errorf("cpu quota %q, want 0.5 of a 100 ms period", q)
	}
	end := st.WaitEnd(t, rec.RequestId, time.Minute)
	out := strings.Join(st.Stdout(t, rec.RequestId), "|")
	errs := strings.Join(lines(t, st, rec.RequestId, "stderr"), "|")
	if end.Status != record.Failed || out != "uid=1000 gid=2000|wrote 1 MiB|tmp ok" || !strings.Contains(errs, "read-only file system") {
		t.Fatalf("%+v\nstdout %s\nstderr %s", end, out, errs)
	}
	end = run(t, st, "filler", []byte(`{}`))
	if errs := strings.Join(lines(t, st, end.RequestId, "stderr"), "|"); end.Status != record.Failed || !strings.Contains(errs, "no space left on device") {
		t.Fatalf("past the tmpfs size: %+v %s", end, errs)
	}
}

func lines(t *testing.T, st *testenv.Stack, id, stream string) []string {
	var out []string
	for _, l := range st.Lines(t, id) {
		if l.Stream == stream {
			out = append(out, l.Line)
		}
	}
	return out
}

// A gateway on one node terminates an instance a worker on another node
// runs: the request travels through Redis.
func TestTerminateReachesTheOwningWorker(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	fn := config.Function{Name: "sleeper", Image: jobImage(t), Args: []string{"sleep", "1h"}}
	wcfg := s.Config(t, redisAddr, fn)
	wcfg.Worker.Node = "worker-host"
	testenv.StartStackWith(t, s, wcfg, node.Options{Role: node.RoleWorker})
	gcfg := s.Config(t, redisAddr, fn)
	gw := testenv.StartStackWith(t, s, gcfg, node.Options{Role: node.RoleGateway})

	rec := gw.Invoke(t, "sleeper", "", []byte(`{}`), 200)
	if rec.Node != "worker-host" {
		t.Fatalf("ran on %q", rec.Node)
	}
	end, took := terminate(t, gw, rec.RequestId, false, 200)
	if end.Status != record.Aborted || end.StatusCode != 499 {
		t.Fatalf("%+v", end)
	}
	t.Logf("terminate across nodes → ABORTED in %v", took)
}

// A gateway that dies between recording an event and queueing its task
// leaves a PENDING record with no task: the orphan sweeper queues it and
// it runs, once.
func TestOrphanedRecordRuns(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran"}})
	cfg.Submit.OrphanS = 1
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	r := &record.Record{RequestId: "orphan-1", FunctionName: "fn", Namespace: "default", Qualifier: "$LATEST", RequestSource: "TRIGGER_TIMER",
		Status: record.Pending, StatusCode: 202, Attempt: 1, EnqueueTime: time.Now().UTC().Format(record.TimeFormat)}
	if created, _, err := st.Records.Create(t.Context(), r, []byte(`{}`)); err != nil || !created {
		t.Fatalf("record: %v %v", created, err)
	}
	end := st.WaitEnd(t, r.RequestId, time.Minute)
	if end.Status != record.Finished || len(st.Stdout(t, r.RequestId)) != 1 || end.Attempt != 1 {
		t.Fatalf("orphan: %+v, output %v", end, st.Stdout(t, r.RequestId))
	}
}

// With Redis behind TLS (a rediss:// URL), the log driver — a separate
// process the shim starts — connects over TLS too: the job's output
// arrives, where a plain-text connection to the TLS port would get none.
func TestLogsOverTLSRedis(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	url := testenv.StartRedisTLS(t, "s3cret-tls")
	cfg := s.Config(t, "127.0.0.1:1", config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "over tls"}})
	cfg.Redis.Addr, cfg.Redis.URL = "", url
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	end := run(t, st, "fn", []byte(`{}`))
	if out := st.Stdout(t, end.RequestId); end.Status != record.Finished || len(out) != 1 || out[0] != "over tls" {
		t.Fatalf("%+v, output %v", end, out)
	}
}

// shims lists the containerd-shim-runc-v2 processes serving namespace ns.
func shims(t *testing.T, ns string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) == 0 || !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-namespace" && args[i+1] == ns {
				out = append(out, strings.Join(args, " "))
			}
		}
	}
	return out
}

// Every shim a worker causes exits with its last task: after jobs that
// finish, fail, time out, are terminated or never start, and the
// worker's stop (which removes the warm shim's anchor), no shim of the
// namespace is left.
func TestNoShimOutlivesItsTasks(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	s := testenv.Shared(t)
	one := 1
	cfg := s.Config(t, testenv.Redis(t),
		config.Function{Name: "ok", Image: img, Args: []string{"echo", "hi"}},
		config.Function{Name: "fails", Image: img, Args: []string{"exit", "3"}, Retry: config.Retry{Max: new(int)}},
		config.Function{Name: "slow", Image: img, Args: []string{"sleep", "1h"}, TimeoutS: one, Retry: config.Retry{Max: new(int)}},
		config.Function{Name: "bad", Image: img, Command: []string{"/no/such/binary"}, Retry: config.Retry{Max: new(int)}},
		config.Function{Name: "long", Image: img, Args: []string{"sleep", "1h"}})
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	var ids []string
	for _, fn := range []string{"ok", "fails", "slow", "bad", "ok", "fails"} {
		ids = append(ids, st.Invoke(t, fn, "?wait=none", []byte(`{}`), 202).RequestId)
	}
	long := st.Invoke(t, "long", "", []byte(`{}`), 200)
	terminate(t, st, long.RequestId, false, 200)
	for _, id := range ids {
		st.WaitEnd(t, id, time.Minute)
	}
	ns := st.Config.Containerd.Namespace
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Node.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	testenv.EventuallyNoError(t, 20*time.Second, "no shim left in "+ns, func() error {
		if left := shims(t, ns); len(left) > 0 {
			return fmt.Errorf("%d shims: %v", len(left), left)
		}
		return nil
	})
}

// A worker killed while containerd created a task can leave the task's
// bundle behind, and containerd (1.6) then refuses every create of that
// id until it restarts. The worker clears the leftover and starts it.
func TestLeftoverBundleDoesNotBlockTheStart(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran"}})
	cfg.Worker.ShimGroup = new(bool) // its own shim: the path the crash left
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	id := submit.DeriveRequestID("idempotency-key", "fn", "crashed-create")
	bundle := filepath.Join(s.ContainerdState(), "io.containerd.runtime.v2.task", cfg.Containerd.Namespace, id)
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	code, body := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=none", []byte(`{}`), map[string]string{"Idempotency-Key": "crashed-create"})
	if code != 202 {
		t.Fatalf("invoke: %d %s", code, body)
	}
	end := st.WaitEnd(t, id, time.Minute)
	if out := st.Stdout(t, id); end.Status != record.Finished || len(out) != 1 || out[0] != "ran" {
		t.Fatalf("with a leftover bundle: %+v, output %v", end, out)
	}
}

// security: restricted is Kubernetes' restricted level: no capability,
// a non-root user (65534 for an image that says root), a read-only
// rootfs with a writable /tmp; and every job has its own cgroup
// namespace (its /proc/self/cgroup paths are "/"; on the main of
// 2026-12-04 they named the host's /<namespace>/<id>).
func TestRestrictedProfileAndCgroupNamespace(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t,
		config.Function{Name: "locked", Image: jobImage(t), Security: config.SecurityRestricted, Retry: noRetry,
			Args: []string{"status", "whoami", "write", "1", "/tmp/ok", "echo", "tmp ok", "cat", "/proc/self/cgroup", "write", "1", "/denied"}},
		config.Function{Name: "plain", Image: jobImage(t), Args: []string{"whoami"}})
	end := run(t, st, "locked", []byte(`{}`))
	out := st.Stdout(t, end.RequestId)
	joined := strings.Join(out, "\n")
	for _, want := range []string{"CapEff: 0000000000000000", "NoNewPrivs: 1", "uid=65534 gid=65534", "wrote 1 MiB", "tmp ok"} {
		if !strings.Contains(joined, want) {
			t.Errorf("restricted job lacks %q:\n%s", want, joined)
		}
	}
	if end.Status != record.Failed || end.ExitCode == nil || *end.ExitCode != 2 {
		t.Errorf("writing outside /tmp on a read-only rootfs: %+v", end)
	}
	cgroups := 0
	for _, l := range out {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && (strings.HasPrefix(f[2], "/") && f[0] != "" && f[0][0] >= '0' && f[0][0] <= '9') {
			cgroups++
			if f[2] != "/" {
				t.Errorf("a cgroup path the job sees is %q, want / (own cgroup namespace)", l)
			}
		}
	}
	if cgroups == 0 {
		t.Errorf("no /proc/self/cgroup lines in:\n%s", joined)
	}
	if out := st.Stdout(t, run(t, st, "plain", []byte(`{}`)).RequestId); len(out) != 1 || out[0] != "uid=0 gid=0" {
		t.Errorf("security: default keeps the image's user: %v", out)
	}
}
