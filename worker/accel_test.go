package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/worker"
	"github.com/jobgate/jobgate/worker/runtime"
)

func waitAccel(t *testing.T, w *worker.Worker, fn, state string) worker.AccelState {
	t.Helper()
	var st worker.AccelState
	testenv.Eventually(t, 60*time.Second, "acceleration of "+fn+" "+state, func() bool {
		var ok bool
		st, ok = w.Acceleration()[fn]
		return ok && st.State == state
	})
	return st
}

// An accelerated function's image is pulled, unpacked and pinned when the
// worker starts, before any event; the pin survives the image's removal
// (its layers are not downloaded again), shows in /readyz, and follows
// config changes.
func TestAccelerationPullsAtStartPinsAndFollowsReload(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	repo := "test/accel"
	ref := s.Registry + "/" + repo + ":1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartStack(t, config.Function{Name: "fast", Image: ref, Args: []string{"exit", "0"}, Acceleration: true})
	w := st.Node.Worker
	as := waitAccel(t, w, "fast", "pinned")
	if !strings.HasPrefix(as.Digest, "sha256:") || as.Image != ref {
		t.Fatalf("state %+v", as)
	}
	gets := s.BlobGets(repo)
	if gets == 0 {
		t.Fatal("no blob was downloaded before the first event")
	}
	ctx := context.Background()
	rt := w.Runtime()
	ctd := testenv.OpenContainerd(t, st.Config.Containerd.Address, st.Config.Containerd.Namespace)
	labels, _, err := ctd.ImageLabels(ctx, ref)
	if err != nil || labels[runtime.LabelPinned] != "true" {
		t.Fatalf("image labels %v, %v", labels, err)
	}
	code, body := st.Do(t, "GET", "/readyz", nil, nil)
	var ready struct {
		Acceleration map[string]worker.AccelState `json:"acceleration"`
	}
	if err := json.Unmarshal(body, &ready); code != 200 || err != nil || ready.Acceleration["fast"].State != "pinned" {
		t.Fatalf("readyz %d %s", code, body)
	}

	// The first event needs no download.
	if end := run(t, st, "fast", []byte(`{}`)); end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	// Remove the image record and let containerd collect: the lease keeps
	// the layers, so the next pull fetches nothing.
	if err := ctd.RemoveImage(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if end := run(t, st, "fast", []byte(`{}`)); end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	if got := s.BlobGets(repo); got != gets {
		t.Fatalf("blob GETs %d after removing a pinned image, want %d (no re-download)", got, gets)
	}

	// Reload: acceleration off for "fast", on for a new function.
	ref2 := s.Registry + "/test/accel2:1"
	if _, err := testjob.Push(ref2); err != nil {
		t.Fatal(err)
	}
	next := *st.Config
	next.Functions = []config.Function{
		{Name: "fast", Image: ref, Args: []string{"exit", "0"}},
		{Name: "other", Image: ref2, Args: []string{"exit", "0"}, Acceleration: true},
	}
	if err := config.Complete(&next, "test"); err != nil {
		t.Fatal(err)
	}
	st.Node.Reload(ctx, &next)
	waitAccel(t, w, "other", "pinned")
	if _, ok := w.Acceleration()["fast"]; ok {
		t.Fatalf("fast still accelerated: %+v", w.Acceleration())
	}
	pins, err := rt.Pins(ctx)
	if err != nil || len(pins) != 1 || pins[0] != "other" {
		t.Fatalf("pins %v %v", pins, err)
	}
	if labels, _, _ := ctd.ImageLabels(ctx, ref); labels[runtime.LabelPinned] != "" {
		t.Fatalf("unpinned image keeps its label: %v", labels)
	}
}

// A failing acceleration (image missing) is reported, not fatal.
func TestAccelerationFailureIsReported(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	st := testenv.StartStack(t, config.Function{Name: "gone", Image: s.Registry + "/test/missing:1", Acceleration: true})
	as := waitAccel(t, st.Node.Worker, "gone", "failed")
	if !strings.Contains(as.Error, "not found") {
		t.Fatalf("%+v", as)
	}
	if code, body := st.Do(t, "GET", "/readyz", nil, nil); code != 200 || !strings.Contains(string(body), `"failed"`) {
		t.Fatalf("readyz %d %s", code, body)
	}
}
