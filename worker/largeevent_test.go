package worker_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// With large_events: file, a 5 MiB event reaches the job byte-exact as
// a read-only file, the environment holding a stub that says so (and a
// provisioned instance, created without the mount, is passed over); a
// small one stays in the environment, as in SCF. Past max_event_mb, and
// past 128 KiB without large_events, the answer is 413.
func TestLargeEventAsFile(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	// Its last step tries to write the file, which is read-only: exit 2.
	args := []string{"event", "env", jobenv.EventFileVar, "filesum", "write", "1", jobenv.EventFilePath}
	none := 0
	st := testenv.StartStack(t,
		config.Function{Name: "big", Image: ref, Args: args, LargeEvents: "file", Provisioned: 1, Retry: config.Retry{Max: &none}},
		config.Function{Name: "plain", Image: ref, Args: []string{"eventsum"}})

	noise := make([]byte, 5<<19)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	data := hex.EncodeToString(noise) // 5 MiB
	event := []byte(`{"data":"` + data[:5<<20-len(`{"data":""}`)] + `"}`)
	if len(event) != 5<<20 {
		t.Fatalf("event is %d bytes", len(event))
	}
	rec := st.Invoke(t, "big", "?wait=none", event, http.StatusAccepted)
	end := st.WaitEnd(t, rec.RequestId, time.Minute)
	if end.Status != record.Failed || end.ExitCode == nil || *end.ExitCode != 2 {
		t.Fatalf("large event: %+v", end)
	}
	out := st.Stdout(t, rec.RequestId)
	want := []string{
		string(jobenv.FileStub(len(event))),
		jobenv.EventFileVar + "=" + jobenv.EventFilePath,
		fmt.Sprintf("len=%d sha256=%x", len(event), sha256.Sum256(event)),
	}
	if len(out) < 3 || strings.Join(out[:3], "\n") != strings.Join(want, "\n") {
		t.Fatalf("stdout %q, want %q", out, want)
	}
	// (A provisioned instance, which has no mount, would have failed
	// filesum: the large event was started cold.)
	var stderr []string
	for _, l := range st.Lines(t, rec.RequestId) {
		if l.Stream == "stderr" {
			stderr = append(stderr, l.Line)
		}
	}
	if !strings.Contains(strings.Join(stderr, "\n"), "read-only file system") {
		t.Errorf("writing the event file: stderr %q, want a read-only file system", stderr)
	}
	testenv.Eventually(t, 30*time.Second, "the event file removed", func() bool {
		left, _ := filepath.Glob(filepath.Join(st.Config.Worker.StateDir, "events", "*"))
		return len(left) == 0
	})

	small := st.Invoke(t, "big", "?wait=none", []byte(`{"n":1}`), http.StatusAccepted)
	if end := st.WaitEnd(t, small.RequestId, time.Minute); end.Status != record.Failed {
		// filesum fails: there is no file for an event that fits the environment.
		t.Fatalf("small event: %+v", end)
	}
	if out := st.Stdout(t, small.RequestId); len(out) < 2 || out[0] != `{"n":1}` || out[1] != jobenv.EventFileVar+" unset" {
		t.Fatalf("small event stdout %q", out)
	}

	over := append([]byte(`{"data":"`), make([]byte, config.DefaultMaxEventMB<<20)...)
	if code, body := st.Do(t, http.MethodPost, "/v1/functions/big/invoke", over, nil); code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "max_event_mb") {
		t.Fatalf("over max_event_mb: %d %s", code, body)
	}
	mid := []byte(`{"data":"` + data[:200<<10] + `"}`)
	if code, body := st.Do(t, http.MethodPost, "/v1/functions/plain/invoke", mid, nil); code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "large_events: file") {
		t.Fatalf("200 KiB without large_events: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(st.Config.Worker.StateDir, "events")); err != nil {
		t.Errorf("events dir: %v", err)
	}
}

// A large event's host file goes with an instance that a restarted worker
// finds superseded (its invocation moved on while the worker was away):
// on the main of 2026-12-04 the instance was removed and the file stayed.
func TestLargeEventFileGoesWithASupersededInstance(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "big", Image: ref, Args: []string{"sleep", "1h"}, LargeEvents: "file"})
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	event := []byte(`{"data":"` + strings.Repeat("x", 200<<10) + `"}`) // over the environment's limit
	rec := st.Invoke(t, "big", "", event, http.StatusOK)
	file := filepath.Join(cfg.Worker.StateDir, "events", record.InstanceID(rec.RequestId, 1)+".json")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the event file of a running instance: %v", err)
	}
	// The worker goes away (its instance runs on), and the invocation
	// moves on to attempt 2 meanwhile, as a NodeLost retry would.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Node.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	two := 2
	if err := testenv.RecordStore(t, cfg.Redis.Addr, cfg).Update(ctx, rec.RequestId, record.Update{Attempt: &two}); err != nil {
		t.Fatal(err)
	}
	testenv.StartStackWith(t, s, cfg, node.Options{})
	testenv.EventuallyNoError(t, 30*time.Second, "the superseded instance's event file removed", func() error {
		if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("event file: %v", err)
		}
		return nil
	})
}
