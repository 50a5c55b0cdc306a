package worker_test

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/worker"
	"github.com/jobgate/jobgate/worker/runtime"
)

func waitPool(t *testing.T, w *worker.Worker, fn string, ready int) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("%d ready in the pool of %s", ready, fn), func() bool {
		return w.Provisioned()[fn].Ready == ready
	})
}

func waitWarm(t *testing.T, rt *runtime.Runtime, n int) map[string]string {
	t.Helper()
	var warm map[string]string
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%d warm instances", n), func() bool {
		var err error
		warm, err = rt.Warm(context.Background())
		return err == nil && len(warm) == n
	})
	return warm
}

// provisioned: N keeps N warm instances (created and started, waiting for
// an environment). Events take them: each sees its own event and
// variables, its log is under its RequestId, its container goes with it;
// the pool refills, shrinks on reload and is removed on shutdown.
func TestProvisionedInstancesTakeRefillAndRelease(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	fn := config.Function{Name: "warm", Image: img, Args: []string{"env", "SCF_CUSTOM_CONTAINER_EVENT", "env", "JOBGATE_REQUEST_ID", "env", "GREETING"},
		Env: map[string]string{"GREETING": "hi"}, Provisioned: 2, Retry: noRetry}
	st := testenv.StartStack(t, fn)
	w := st.Node.Worker
	rt := w.Runtime()
	ctx := context.Background()
	waitPool(t, w, "warm", 2)
	before := waitWarm(t, rt, 2)
	for i, ev := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		end := run(t, st, "warm", []byte(ev))
		if end.Status != record.Finished {
			t.Fatalf("%d: %+v", i, end)
		}
		want := []string{"SCF_CUSTOM_CONTAINER_EVENT=" + ev, "JOBGATE_REQUEST_ID=" + end.RequestId, "GREETING=hi"}
		if out := st.Stdout(t, end.RequestId); len(out) != 3 || out[0] != want[0] || out[1] != want[1] || out[2] != want[2] {
			t.Fatalf("%d: stdout %q, want %q", i, out, want)
		}
		waitPool(t, w, "warm", 2)
	}
	after := waitWarm(t, rt, 2)
	for id := range before {
		if _, still := after[id]; still {
			t.Fatalf("warm instance %s was never taken (%v → %v)", id, before, after)
		}
	}
	// A used instance is removed just after its end is recorded.
	testenv.EventuallyNoError(t, 30*time.Second, "no used instance left behind", func() error {
		if ids, _ := rt.List(ctx); len(ids) != 0 {
			return fmt.Errorf("used instances left behind: %v", ids)
		}
		return nil
	})

	next := *st.Config
	fn.Provisioned = 1
	fn.Network = config.NetworkNone // as testenv gave it: this worker has no bridge
	next.Functions = []config.Function{fn}
	if err := config.Complete(&next, "test"); err != nil {
		t.Fatal(err)
	}
	st.Node.Reload(ctx, &next)
	waitPool(t, w, "warm", 1)
	waitWarm(t, rt, 1)

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	check, err := runtime.New(ctx, runtime.Options{Address: st.Config.Containerd.Address, Namespace: st.Config.Containerd.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	waitWarm(t, check, 0)
}

// A provisioned function whose command is not in the image reports it,
// and its events still get the usual 445 from a normal create.
func TestProvisionedBadCommandFallsBack(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	st := testenv.StartStack(t, config.Function{Name: "bad", Image: img, Command: []string{"/no/such/binary"}, Provisioned: 1, Retry: noRetry})
	w := st.Node.Worker
	testenv.Eventually(t, 30*time.Second, "the pool's error", func() bool { return w.Provisioned()["bad"].Error != "" })
	end := run(t, st, "bad", []byte(`{}`))
	if end.Status != record.Failed || end.StatusCode != record.CodeContainerInitError {
		t.Fatalf("%+v", end)
	}
}

// A provisioned instance found unusable at release (its stub no longer
// waits) falls back to a fresh create; the log still has one START line
// (found by the SIGKILL crash test from a fresh clone: START written by
// the warm path, then again by the fallback).
func TestUnusableProvisionedInstanceFallsBackWithOneStart(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "warm", Image: jobImage(t), Args: []string{"echo", "ran"}, Provisioned: 1, Retry: noRetry})
	w := st.Node.Worker
	waitPool(t, w, "warm", 1)
	for id := range waitWarm(t, w.Runtime(), 1) {
		// The release writes the environment to this FIFO: without it
		// the instance is unusable.
		if err := os.Remove(filepath.Join(st.Config.Worker.StateDir, "run", id, "start")); err != nil {
			t.Fatal(err)
		}
	}
	end := run(t, st, "warm", []byte(`{}`))
	starts := 0
	for _, l := range st.Lines(t, end.RequestId) {
		if strings.HasPrefix(l.Line, "START ") {
			starts++
		}
	}
	if end.Status != record.Finished || starts != 1 {
		t.Fatalf("%+v with %d START lines", end, starts)
	}
}

// Provisioned instances work however jobgate was built (issue 12): a
// plain `go build` with cgo gives a dynamic binary that cannot run
// inside job containers, so the worker writes out the static stub it
// carries and uses it. Here the log driver is a dynamic build: the pool
// fills, an event takes a warm instance and its output arrives.
func TestProvisionedInstancesWithADynamicLogDriver(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	dynamic := filepath.Join(t.TempDir(), "jobgate-logger")
	build := exec.Command("go", "build", "-o", dynamic, "./cmd/jobgate-logger")
	build.Dir, build.Env = testenv.ModuleRoot(), append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a dynamic log driver: %v\n%s", err, out)
	}
	if f, err := elf.Open(dynamic); err != nil || !slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		t.Fatalf("%s is not dynamic (%v): the test proves nothing", dynamic, err)
	}
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "warm", Image: jobImage(t), Args: []string{"echo", "warm"}, Provisioned: 1, Retry: noRetry})
	cfg.Worker.LoggerBinary = dynamic
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	w := st.Node.Worker
	if d := w.Degraded(); d != nil {
		t.Fatalf("degraded: %v", d)
	}
	waitPool(t, w, "warm", 1)
	warm := waitWarm(t, w.Runtime(), 1)
	end := run(t, st, "warm", []byte(`{}`))
	if out := st.Stdout(t, end.RequestId); end.Status != record.Finished || len(out) != 1 || out[0] != "warm" {
		t.Fatalf("%+v, stdout %q", end, out)
	}
	waitPool(t, w, "warm", 1)
	for id := range warm {
		if _, still := waitWarm(t, w.Runtime(), 1)[id]; still {
			t.Fatalf("the event did not take warm instance %s", id)
		}
	}
	if notes := worker.InstallNotes(dynamic); notes != nil {
		t.Fatalf("a jobgate-logger costs nothing extra: %v", notes)
	}
	if notes := worker.InstallNotes(s.JobgateBin); len(notes) != 1 || !strings.Contains(notes[0], "full jobgate") {
		t.Fatalf("jobgate as the driver: %v", notes)
	}
}

// worker.warm.auto: a function with no `provisioned` that runs gets warm
// instances (the next event takes one), the pool empties after idle_s
// without a start, and max_mb bounds it.
func TestAdaptiveWarmPool(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	fn := config.Function{Name: "auto", Image: jobImage(t), Args: []string{"echo", "ran"}, Retry: noRetry, MemoryMB: 64}
	big := config.Function{Name: "big", Image: jobImage(t), Args: []string{"echo", "ran"}, Retry: noRetry, MemoryMB: 512}
	cfg := s.Config(t, testenv.Redis(t), fn, big)
	cfg.Worker.Warm = config.Warm{Auto: true, MaxMB: 256, IdleS: 3}
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	w := st.Node.Worker
	if p := w.Provisioned(); len(p) != 0 {
		t.Fatalf("pools before any traffic: %+v", p)
	}
	if end := run(t, st, "auto", []byte(`{}`)); end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	testenv.Eventually(t, 30*time.Second, "an adaptive warm instance", func() bool {
		p := w.Provisioned()["auto"]
		return p.Auto && p.Want == 1 && p.Ready == 1
	})
	warm := waitWarm(t, w.Runtime(), 1)
	end := run(t, st, "auto", []byte(`{}`))
	if out := st.Stdout(t, end.RequestId); end.Status != record.Finished || len(out) != 1 || out[0] != "ran" {
		t.Fatalf("%+v %q", end, out)
	}
	for id := range warm {
		testenv.Eventually(t, 30*time.Second, "the warm instance taken and replaced", func() bool {
			now, err := w.Runtime().Warm(context.Background())
			_, still := now[id]
			return err == nil && !still && len(now) == 1
		})
	}
	// 512 MB does not fit max_mb 256: runs, but no pool.
	if end := run(t, st, "big", []byte(`{}`)); end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	// No start for idle_s: the pool empties (the fill passes meanwhile
	// never give "big" a pool).
	testenv.Eventually(t, 60*time.Second, "the idle pool emptied", func() bool {
		p := w.Provisioned()
		if b, ok := p["big"]; ok {
			t.Fatalf("a function over max_mb got a pool: %+v", b)
		}
		_, ok := p["auto"]
		return !ok
	})
	waitWarm(t, w.Runtime(), 0)
}
