package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/imagebuild"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/worker/runtime"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var noRetry = config.Retry{Max: new(int)}

func jobImage(t *testing.T) string {
	t.Helper()
	ref := testenv.Shared(t).Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// run invokes fn with event and waits for the end.
func run(t *testing.T, st *testenv.Stack, fn string, event []byte) *record.Record {
	t.Helper()
	rec := st.Invoke(t, fn, "?wait=none", event, 202)
	return st.WaitEnd(t, rec.RequestId, 60*time.Second)
}

func TestEventReachesContainerByteForByte(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	st := testenv.StartStack(t,
		config.Function{Name: "echo", Image: img, Args: []string{"event"}},
		config.Function{Name: "sum", Image: img, Args: []string{"eventsum"}})

	small := []byte(`{"q":"she said \"hi\"","bs":"C:\\path\\n","u":"événement 事件 ✓ 🚀","ctl":"\u0001\t","n":1.50,"nested":{"a":[1,2,{"b":null}]}}`)
	end := run(t, st, "echo", small)
	if end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	if out := st.Stdout(t, end.RequestId); len(out) != 1 || out[0] != string(small) {
		t.Fatalf("container saw\n%q\nwant\n%q", out, small)
	}

	// A line over the log driver's 64 KiB record comes back whole: cut on
	// character boundaries into partial pieces that join to the line.
	wide := []byte(`{"s":"` + strings.Repeat("ab✓", 100<<10/5) + `"}`)
	end = run(t, st, "echo", wide)
	var joined strings.Builder
	pieces := 0
	for _, l := range st.Lines(t, end.RequestId) {
		if l.Stream == logstore.Stdout {
			joined.WriteString(l.Line)
			pieces++
			if !utf8.ValidString(l.Line) {
				t.Fatalf("a %d-byte piece of the line is not valid UTF-8", len(l.Line))
			}
		}
	}
	if end.Status != record.Finished || pieces < 2 || joined.String() != string(wide) {
		t.Fatalf("100 KiB UTF-8 line: %s, %d pieces joining to %d bytes, want %d", end.Status, pieces, joined.Len(), len(wide))
	}

	big := []byte(`{"blob":"` + strings.Repeat(`é\"\\x`, 100<<10/6) + `"}`) // ~100 KiB
	end = run(t, st, "sum", big)
	want := fmt.Sprintf("len=%d sha256=%x", len(big), sha256.Sum256(big))
	if out := st.Stdout(t, end.RequestId); len(out) != 1 || out[0] != want {
		t.Fatalf("100 KiB event: got %v want %s", out, want)
	}
}

func TestBuiltinEnvAndOverrides(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	names := []string{"TENCENTCLOUD_RUNENV", "USER_CODE_ROOT", "USER", "SCF_FUNCTIONNAME", "SCF_FUNCTIONVERSION",
		"TENCENTCLOUD_REGION", "TENCENTCLOUD_APPID", "TENCENTCLOUD_UIN", "JOBGATE_REQUEST_ID", "JOBGATE_ATTEMPT",
		"IMAGE_ONLY", "OVERRIDE_ME", "FN_ONLY", "PATH"}
	var args []string
	for _, n := range names {
		args = append(args, "env", n)
	}
	args = append(args, "args")
	st := testenv.StartStack(t,
		config.Function{Name: "envfn", Image: img, Args: args, Env: map[string]string{"OVERRIDE_ME": "function", "FN_ONLY": "yes"}},
		// Command replaces ENTRYPOINT (and the image CMD); Args follow it.
		config.Function{Name: "cmdfn", Image: img, Command: []string{"/bin/job", "echo", "from-command"}, Args: []string{"args"}})

	end := run(t, st, "envfn", []byte(`{}`))
	got := st.Stdout(t, end.RequestId)
	want := []string{
		"TENCENTCLOUD_RUNENV=SCF", "USER_CODE_ROOT=/var/user/", "USER=qcloud", "SCF_FUNCTIONNAME=envfn",
		"SCF_FUNCTIONVERSION=$LATEST", "TENCENTCLOUD_REGION=ap-guangzhou", "TENCENTCLOUD_APPID=1250000000",
		"TENCENTCLOUD_UIN=100000000001", "JOBGATE_REQUEST_ID=" + end.RequestId, "JOBGATE_ATTEMPT=1",
		"IMAGE_ONLY=from-image", "OVERRIDE_ME=function", "FN_ONLY=yes", "PATH=/bin",
		`["env","TENCENTCLOUD_RUNENV","env","USER_CODE_ROOT","env","USER","env","SCF_FUNCTIONNAME","env","SCF_FUNCTIONVERSION","env","TENCENTCLOUD_REGION","env","TENCENTCLOUD_APPID","env","TENCENTCLOUD_UIN","env","JOBGATE_REQUEST_ID","env","JOBGATE_ATTEMPT","env","IMAGE_ONLY","env","OVERRIDE_ME","env","FN_ONLY","env","PATH","args"]`,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("env (-want +got):\n%s", d)
	}

	end = run(t, st, "cmdfn", []byte(`{}`))
	if d := cmp.Diff([]string{"from-command", `["echo","from-command","args"]`}, st.Stdout(t, end.RequestId)); d != "" {
		t.Fatalf("command/args (-want +got):\n%s", d)
	}
}

func TestExitCodesStderrAndCleanup(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	st := testenv.StartStack(t,
		config.Function{Name: "fails", Image: img, Args: []string{"echo", "out", "stderr", "err line", "exit", "3"}, Retry: noRetry},
		config.Function{Name: "badcmd", Image: img, Command: []string{"/no/such/binary"}},
		config.Function{Name: "slow", Image: img, Args: []string{"ignoreterm", "echo", "started", "sleep", "1h"}, TimeoutS: 1, Retry: noRetry})

	end := run(t, st, "fails", []byte(`{}`))
	if end.Status != record.Failed || end.StatusCode != 439 || end.ExitCode == nil || *end.ExitCode != 3 ||
		!strings.Contains(end.Message, "code 3") || end.EndTime == "" {
		t.Fatalf("exit 3: %+v", end)
	}
	// stdout and stderr are separate pipes: order within a stream is
	// kept, order across streams is not.
	by := map[string][]string{}
	for _, l := range st.Lines(t, end.RequestId) {
		by[l.Stream] = append(by[l.Stream], strings.Fields(l.Line)[0])
	}
	want := map[string][]string{"platform": {"START", "END", "Report"}, "stdout": {"out"}, "stderr": {"err"}}
	if d := cmp.Diff(want, by); d != "" {
		t.Fatalf("log streams (-want +got):\n%s", d)
	}

	end = run(t, st, "badcmd", []byte(`{}`))
	if end.Status != record.Failed || end.StatusCode != 445 || end.Message == "" {
		t.Fatalf("bad command: %+v", end)
	}

	// timeout_s 1; the body ignores SIGTERM, so this also proves the
	// SIGKILL after the grace period.
	end = run(t, st, "slow", []byte(`{}`))
	if end.Status != record.Failed || end.StatusCode != 433 || !strings.Contains(end.Message, "1 s") {
		t.Fatalf("timeout: %+v", end)
	}
	// timeout_s 1 + stop_grace_s 2 (SIGTERM ignored) → killed at ~3 s.
	if end.DurationMs < 3000 || end.DurationMs > 4000 {
		t.Fatalf("timeout took %d ms, want ~3000", end.DurationMs)
	}
	t.Logf("timeout_s=1, grace 2 s: killed after %d ms", end.DurationMs)

	// Nothing is left behind: no container, no snapshot.
	rt, err := runtime.New(t.Context(), runtime.Options{Address: st.Config.Containerd.Address, Namespace: st.Config.Containerd.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	testenv.EventuallyNoError(t, 10*time.Second, "no containers left", func() error {
		ids, err := rt.List(t.Context())
		if err == nil && len(ids) > 0 {
			err = fmt.Errorf("containers left: %v", ids)
		}
		return err
	})
	code, body := st.Do(t, "GET", "/v1/invocations?limit=100", nil, nil)
	if code != 200 {
		t.Fatal(code)
	}
	var page struct{ Invocations []record.Record }
	_ = json.Unmarshal(body, &page)
	for _, r := range page.Invocations {
		if ok, err := testenv.OpenContainerd(t, st.Config.Containerd.Address, st.Config.Containerd.Namespace).SnapshotExists(t.Context(), r.RequestId); err != nil || ok {
			t.Fatalf("snapshot of %s left (%v)", r.RequestId, err)
		}
	}
}

func TestImagePolicyFailsWithoutRetry(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	arm, err := imagebuild.RandomImage(1024, "linux", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.PushIndex(s.Registry+"/policy/armonly:1", map[string]v1.Image{"linux/arm64": arm}); err != nil {
		t.Fatal(err)
	}
	if _, err := imagebuild.Push(s.Registry+"/policy/armsingle:1", arm); err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.PushSchema1(s.Registry, "policy/legacy", "1"); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartStack(t,
		config.Function{Name: "armidx", Image: s.Registry + "/policy/armonly:1"},
		config.Function{Name: "armsingle", Image: s.Registry + "/policy/armsingle:1"},
		config.Function{Name: "legacy", Image: s.Registry + "/policy/legacy:1"},
		config.Function{Name: "notag", Image: s.Registry + "/policy/armonly:missing"})
	cases := map[string]string{
		"armidx":    "linux/arm64",
		"armsingle": "linux/arm64",
		"legacy":    "schema 1 not supported",
		"notag":     "not found",
	}
	for fn, msg := range cases {
		t.Run(fn, func(t *testing.T) {
			// wait=scheduled answers with the scheduling error itself.
			code, body := st.Do(t, "POST", "/v1/functions/"+fn+"/invoke", []byte(`{}`), nil)
			if code != 502 || !strings.Contains(string(body), "PullImageFailed") || !strings.Contains(string(body), msg) {
				t.Fatalf("status %d body %s", code, body)
			}
			var e struct{ RequestId string }
			_ = json.Unmarshal(body, &e)
			rec, err := st.Records.Get(t.Context(), e.RequestId)
			if err != nil || rec.Status != record.Failed || rec.StatusCode != 444 || rec.StartTime != "" {
				t.Fatalf("record %+v %v", rec, err)
			}
			// Permanent: archived by asynq at once, not retried. (The
			// record is written just before the handler returns.)
			insp := asynq.NewInspectorFromRedisClient(st.Node.Redis())
			testenv.EventuallyNoError(t, 10*time.Second, "the task archived without a retry", func() error {
				info, err := insp.GetTaskInfo(queue.Name, e.RequestId)
				switch {
				case err != nil:
					return err
				case info.State == asynq.TaskStateRetry || info.Retried > 0:
					t.Fatalf("a permanent failure was retried: %+v", info)
				case info.State != asynq.TaskStateArchived:
					return fmt.Errorf("task state %v", info.State)
				}
				return nil
			})
		})
	}
}

func TestUnreachableRegistryIsRetried(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t) // nothing listens there
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: fmt.Sprintf("127.0.0.1:%d/none/x:1", port)})
	rec := st.Invoke(t, "fn", "?wait=none", []byte(`{}`), 202)
	insp := asynq.NewInspectorFromRedisClient(st.Node.Redis())
	// Transient: kept and retried, never failed.
	testenv.Eventually(t, 20*time.Second, "PENDING with a retry scheduled", func() bool {
		r, err := st.Records.Get(t.Context(), rec.RequestId)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Terminal() {
			t.Fatalf("a transient failure ended the invocation: %+v", r)
		}
		info, ierr := insp.GetTaskInfo(queue.Name, rec.RequestId)
		return r.Status == record.Pending && strings.Contains(r.Message, "retrying after") && ierr == nil && info.State == asynq.TaskStateRetry
	})
}

func TestRedeliveryDoesNotStartTwice(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "once", "sleep", "2s"}})
	rec := st.Invoke(t, "fn", "", []byte(`{}`), 200)
	// Deliver the task again, as asynq would after a lost ack — in the
	// form an earlier jobgate wrote a first attempt's task (payload with
	// the function), which the worker still takes, and outside asynq's
	// context (no task ID needed for it).
	// Until the first delivery's handler returns, a redelivery is told to
	// wait (TestConcurrentRedeliveryWaits); asynq would retry it.
	task := asynq.NewTask(queue.TypeInvoke, []byte(`{"RequestId":"`+rec.RequestId+`","Function":"fn","Attempt":1}`))
	testenv.EventuallyNoError(t, 30*time.Second, "the redelivery acknowledged", func() error {
		return st.Node.Worker.ProcessTask(context.Background(), task)
	})
	end := st.WaitEnd(t, rec.RequestId, 30*time.Second)
	if end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	var starts, onces int
	for _, l := range st.Lines(t, rec.RequestId) {
		if strings.HasPrefix(l.Line, "START ") {
			starts++
		}
		if l.Stream == logstore.Stdout && l.Line == "once" {
			onces++
		}
	}
	if starts != 1 || onces != 1 {
		t.Fatalf("started %d times, ran %d times", starts, onces)
	}
}

// asynq can hand one task out twice at once when a Redis failover loses
// the first hand-over (the fleet suite saw it): the second delivery, on
// the same worker while the first is still creating the instance, must
// not touch it. Before, it took the half-made container for a crash's
// leftover and removed it, and the first ended FAILED (runc: "mkdir
// …/rootfs/proc: no such file or directory"). A delayed invocation holds
// its first delivery in SCHEDULING until its time, so the second one
// lands inside it.
func TestConcurrentRedeliveryWaits(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "once"}})
	rec := st.Invoke(t, "fn", "?wait=none&delay_s=6", []byte(`{}`), http.StatusAccepted)
	testenv.EventuallyNoError(t, time.Minute, "the first delivery scheduling", func() error {
		got, err := st.Records.Get(t.Context(), rec.RequestId)
		if err != nil {
			return err
		}
		if got.Status != record.Scheduling {
			return fmt.Errorf("status %s", got.Status)
		}
		return nil
	})
	task := asynq.NewTask(queue.TypeInvoke, []byte(`{"RequestId":"`+rec.RequestId+`","Function":"fn","Attempt":1}`))
	err := st.Node.Worker.ProcessTask(context.Background(), task)
	if err == nil || !strings.Contains(err.Error(), "being scheduled by another delivery") {
		t.Fatalf("second delivery during the first: %v", err)
	}
	end := st.WaitEnd(t, rec.RequestId, time.Minute)
	if end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	if onces := st.Stdout(t, rec.RequestId); len(onces) != 1 || onces[0] != "once" {
		t.Fatalf("stdout %q", onces)
	}
}

// The gateway cannot see the image's env; the worker adds it and checks
// the total again: over 2 MiB is FAILED/406 before anything runs.
func TestImageEnvPushesOverTheTotal(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/bigenv:1"
	var imgEnv []string
	for i := 0; i < 3; i++ {
		imgEnv = append(imgEnv, fmt.Sprintf("IMG_%d=%s", i, strings.Repeat("i", 120_000)))
	}
	if _, err := testjob.PushWithEnv(ref, imgEnv); err != nil {
		t.Fatal(err)
	}
	fnEnv := map[string]string{}
	for i := 0; i < 15; i++ {
		fnEnv[fmt.Sprintf("FN_%02d", i)] = strings.Repeat("f", 120_000) // 1.8 MB: fits alone
	}
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: ref, Env: fnEnv})
	code, body := st.Do(t, "POST", "/v1/functions/fn/invoke", []byte(`{}`), nil)
	if code != 413 || !strings.Contains(string(body), "RequestTooLarge") || !strings.Contains(string(body), "2097152") {
		t.Fatalf("status %d: %s", code, body)
	}
	var e struct{ RequestId string }
	_ = json.Unmarshal(body, &e)
	rec, err := st.Records.Get(t.Context(), e.RequestId)
	if err != nil || rec.Status != record.Failed || rec.StatusCode != 406 {
		t.Fatalf("%+v %v", rec, err)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

// A moved tag is picked up once worker.tag_recheck_ms has passed since
// the registry was last asked; within it, events reuse the checked digest.
func TestMovedTagPickedUpAfterRecheckWindow(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/moving:1"
	d1, err := testjob.PushWithEnv(ref, []string{"VERSION=1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: ref, Args: []string{"env", "VERSION"}})
	window := 1500
	cfg.Worker.TagRecheckMs = &window
	// The window runs on a fake clock: "soon" is inside it by
	// construction, "later" after it.
	clock := clockwork.NewFakeClock()
	st := testenv.StartStackWith(t, s, cfg, node.Options{Clock: clock})
	first := run(t, st, "fn", []byte(`{}`))
	d2, err := testjob.PushWithEnv(ref, []string{"VERSION=2"})
	if err != nil || d2 == d1 {
		t.Fatalf("push v2: %v (%s)", err, d2)
	}
	soon := run(t, st, "fn", []byte(`{}`))
	clock.Advance(time.Duration(window) * time.Millisecond)
	later := run(t, st, "fn", []byte(`{}`))
	got := []string{st.Stdout(t, first.RequestId)[0], st.Stdout(t, soon.RequestId)[0], st.Stdout(t, later.RequestId)[0]}
	if got[0] != "VERSION=1" || got[1] != "VERSION=1" || soon.ImageDigest != d1 {
		t.Fatalf("within the window the checked digest was not reused: versions %q, digest %s want %s", got, soon.ImageDigest, d1)
	}
	if got[2] != "VERSION=2" || later.ImageDigest != d2 {
		t.Fatalf("after the window the moved tag was not picked up: versions %q, digest %s want %s", got, later.ImageDigest, d2)
	}
}

// ppid is a process's parent.
func ppid(t *testing.T, pid uint32) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...; comm may hold spaces: cut after ")".
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	var p int
	fmt.Sscan(fields[1], &p)
	return p
}

// With worker.shim_group (the default), a job started while no other
// start is under way runs under the worker's warm shim, the one that
// holds the never-started anchor task.
func TestJobStartsInTheWarmShim(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: img, Args: []string{"sleep", "3s"}})
	ctd := testenv.OpenContainerd(t, st.Config.Containerd.Address, st.Config.Containerd.Namespace)
	anchor, err := ctd.TaskPid(t.Context(), "jobgate-shim-"+st.Config.Worker.Node) // the anchor task
	if err != nil || anchor == 0 {
		t.Fatalf("anchor: %d %v", anchor, err)
	}
	rec := st.Invoke(t, "fn", "", []byte(`{}`), 200)
	job, err := ctd.TaskPid(t.Context(), rec.RequestId)
	if err != nil {
		t.Fatal(err)
	}
	if a, j := ppid(t, anchor), ppid(t, job); a != j {
		t.Fatalf("job's shim %d, warm shim %d", j, a)
	}
	if end := st.WaitEnd(t, rec.RequestId, time.Minute); end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
}

// A crash of containerd together with a job's shim can leave a container
// process that no task stands for (a `runc init` of a create cut short
// waits forever). Here one is made directly: a process in a container
// cgroup (/<namespace>/<id>) of the worker's namespace with no task. The
// worker ends it within two scans; the namespace's leftovers are counted
// before and after.
func TestLeftoverProcessesAreEnded(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t)
	ns := st.Config.Containerd.Namespace
	root := "/sys/fs/cgroup/pids" // cgroup v1 (this machine); v2 is one tree
	if _, err := os.Stat(root); err != nil {
		root = "/sys/fs/cgroup"
	}
	dir := filepath.Join(root, ns, "cut-short")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir); _ = os.Remove(filepath.Dir(dir)) })
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { _ = cmd.Wait(); close(ended) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-ended })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	leftovers := func() int {
		found, err := st.Node.Worker.Runtime().Leftovers(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return len(found)
	}
	if n := leftovers(); n != 1 {
		t.Fatalf("%d leftovers before, want the one made", n)
	}
	testenv.Eventually(t, 2*time.Minute, "the leftover process to be ended", func() bool {
		select {
		case <-ended:
			return true
		default:
			return false
		}
	})
	if n := leftovers(); n != 0 {
		t.Fatalf("%d leftovers after, want 0", n)
	}
}
