package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/worker"
)

// jg runs the CLI in-process and returns its exit code, stdout, stderr.
func jg(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errs bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errs)
	return code, out.String(), errs.String()
}

// The CLI as users of kubectl, nerdctl and faas-cli expect it: global
// flags, output formats, inline events, waiting for the end with the
// job's exit code, labelled attempts, documented exit codes, errors on
// stderr and data on stdout.
func TestCLI(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	one, zero := 1, 0
	refuses := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusBadGateway) }))
	t.Cleanup(refuses.Close)
	cfg := s.Config(t, testenv.Redis(t),
		config.Function{Name: "hello", Image: ref, Args: []string{"event", "stderr", "to stderr"}},
		config.Function{Name: "fails", Image: ref, Args: []string{"echo", "trying", "exit", "7"}, Retry: config.Retry{Max: &one, DelayS: 1},
			OnFailure: []config.Destination{{URL: refuses.URL, RetryMax: &zero}}})
	st := testenv.StartStackWith(t, s, cfg, node.Options{Tokens: []string{"admin-tok", "reader:read"}})
	g := []string{"--url", st.URL, "--token", "admin-tok"}
	cli := func(stdin string, a ...string) (int, string, string) {
		return jg(t, stdin, append(append([]string{}, g...), a...)...)
	}

	// invoke --data, -o name: the RequestId alone on stdout.
	code, out, _ := cli("", "invoke", "hello", "--data", `{"inline":true}`, "--wait", "none", "-o", "name")
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 36 {
		t.Fatalf("invoke -o name: %d %q", code, out)
	}
	// --wait finished streams the log and exits 0 for a FINISHED job.
	code, out, errs := cli(`{"from":"stdin"}`, "invoke", "hello", "--event", "-", "--wait", "finished")
	if code != 0 || !strings.Contains(out, `{"from":"stdin"}`) || !strings.Contains(out, "to stderr") || !strings.Contains(errs, "RequestId") {
		t.Fatalf("invoke --wait finished: %d\n%s\n%s", code, out, errs)
	}
	// ... and with the job's exit code when it fails (after its retry).
	code, out, errs = cli("", "invoke", "fails", "--wait", "finished")
	if code != 7 || !strings.Contains(errs, "FAILED") {
		t.Fatalf("failing job: exit %d\n%s\n%s", code, out, errs)
	}
	var failedID string
	{
		c, o, _ := cli("", "ls", "--function", "fails", "--status", "failed", "-o", "name") // any case
		failedID = strings.TrimSpace(o)
		if c != 0 || len(failedID) != 36 {
			t.Fatalf("ls --status failed: %d %q", c, o)
		}
	}
	// logs --attempt all labels each attempt; a failed invocation exits 1.
	code, out, _ = cli("", "logs", failedID, "--attempt", "all")
	if code != 1 || !strings.Contains(out, "==> attempt 1 of 2") || !strings.Contains(out, "==> attempt 2 of 2") || strings.Count(out, "trying") != 2 {
		t.Fatalf("logs --attempt all: %d\n%s", code, out)
	}
	code, out, _ = cli("", "logs", failedID, "--tail", "1")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 1 || len(lines) != 2 || !strings.Contains(lines[1], "Report") {
		t.Fatalf("logs --tail 1: %d\n%s", code, out)
	}
	// invoke --batch: one event per NDJSON line, ids in order; a rerun
	// with the same key queues nothing again; a bad line is a usage error.
	ndjson := "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n"
	code, out, errs = cli(ndjson, "invoke", "hello", "--batch", "-", "--idempotency-key", "import-1")
	batchIDs := strings.Fields(out)
	if code != 0 || len(batchIDs) != 3 || !strings.Contains(errs, "queued 3 events in 1 requests (0 already") {
		t.Fatalf("invoke --batch: %d\n%s\n%s", code, out, errs)
	}
	for i, bid := range batchIDs {
		ev, err := st.Records.Event(t.Context(), bid)
		if err != nil || string(ev) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("batch event %d: %q %v", i, ev, err)
		}
	}
	if code, out, errs = cli(ndjson, "invoke", "hello", "--batch", "-", "--idempotency-key", "import-1"); code != 0 || strings.Join(strings.Fields(out), " ") != strings.Join(batchIDs, " ") || !strings.Contains(errs, "(3 already") {
		t.Fatalf("invoke --batch rerun: %d\n%s\n%s", code, out, errs)
	}
	if code, _, errs = cli("{}\nnot json\n", "invoke", "hello", "--batch", "-"); code != 2 || !strings.Contains(errs, "line 2") {
		t.Fatalf("invoke --batch with a bad line: %d %s", code, errs)
	}
	// --delay: SCHEDULED until then.
	if code, out, errs = cli("", "invoke", "hello", "--delay", "1h", "-o", "json"); code != 0 || !strings.Contains(out, `"SCHEDULED"`) || !strings.Contains(out, "ScheduledTime") {
		t.Fatalf("invoke --delay: %d\n%s\n%s", code, out, errs)
	}
	if code, _, _ = cli("", "invoke", "hello", "--delay", "1h", "--at", "2030-01-01T00:00:00Z"); code != 2 {
		t.Fatalf("--delay with --at: exit %d", code)
	}
	// Output formats.
	code, out, _ = cli("", "status", id, "-o", "yaml")
	if code != 0 || !strings.Contains(out, "RequestId: "+id) {
		t.Fatalf("status -o yaml: %d\n%s", code, out)
	}
	code, out, _ = cli("", "ls", "-o", "table")
	if code != 0 || !strings.HasPrefix(out, "REQUEST ID") || !strings.Contains(out, id) {
		t.Fatalf("ls -o table: %d\n%s", code, out)
	}
	var fns struct{ Functions []struct{ Name string } }
	code, out, _ = cli("", "functions", "ls", "-o", "json")
	if err := json.Unmarshal([]byte(out), &fns); code != 0 || err != nil || len(fns.Functions) != 2 {
		t.Fatalf("functions ls: %d %v\n%s", code, err, out)
	}
	if code, out, _ = cli("", "functions", "describe", "hello"); code != 0 || !strings.Contains(out, "Image") {
		t.Fatalf("functions describe: %d\n%s", code, out)
	}
	// Dead letters: the failed one, redriven by function.
	if code, out, _ = cli("", "deadletters", "ls", "-o", "name"); code != 0 || strings.TrimSpace(out) != failedID {
		t.Fatalf("deadletters ls: %d %q", code, out)
	}
	if code, out, _ = cli("", "deadletters", "redrive", "--all", "--function", "fails"); code != 0 || !strings.Contains(out, "redriven "+failedID) {
		t.Fatalf("redrive --all: %d\n%s", code, out)
	}
	testenv.EventuallyNoError(t, time.Minute, "the redriven run to end", func() error {
		r, err := st.Records.Get(context.Background(), failedID)
		if err == nil && (r.Attempt != 3 || !r.Status.Terminal()) {
			err = fmt.Errorf("%s attempt %d", r.Status, r.Attempt)
		}
		return err
	})
	if r, _ := st.Records.Get(context.Background(), failedID); r.Status != record.Failed {
		t.Fatalf("redriven: %+v", r)
	}

	// Exit codes: 2 usage, 3 not found, 4 auth, 5 unreachable; errors on stderr only.
	for _, c := range []struct {
		want int
		args []string
	}{
		{2, append(append([]string{}, g...), "invoke")},
		{2, append(append([]string{}, g...), "ls", "--bogus")},
		{2, append(append([]string{}, g...), "invoke", "hello", "--wait", "sometime")},
		{3, append(append([]string{}, g...), "status", "00000000-0000-0000-0000-000000000000")},
		{3, append(append([]string{}, g...), "invoke", "nope")},
		{4, []string{"--url", st.URL, "--token", "wrong", "ls"}},
		{4, []string{"--url", st.URL, "--token", "reader", "invoke", "hello"}},
		{5, []string{"--url", "http://127.0.0.1:1", "ls"}},
	} {
		code, out, errs := jg(t, "", c.args...)
		if code != c.want || out != "" || !strings.HasPrefix(errs, "jobgate: ") {
			t.Errorf("%v: exit %d (want %d), stdout %q, stderr %q", c.args, code, c.want, out, errs)
		}
	}
	// The destinations' dead letters: the failed invocation's delivery
	// (its URL answered 502, no retries) is listed, shown and purged (its
	// redrive above failed again: a second delivery, of attempt 3).
	delivery := failedID + "~2~failure~0"
	testenv.Eventually(t, 30*time.Second, "the failed delivery dead-lettered", func() bool {
		_, out, _ := cli("", "deadletters", "ls", "--kind", "destination", "-o", "name")
		return slices.Contains(strings.Fields(out), delivery)
	})
	if code, out, _ := cli("", "deadletters", "show", delivery, "--kind", "destination"); code != 0 || !strings.Contains(out, "answered 502") {
		t.Fatalf("show --kind destination: %d %s", code, out)
	}
	if code, out, _ := cli("", "deadletters", "purge", delivery, "--kind", "destination"); code != 0 || !strings.Contains(out, "purged") {
		t.Fatalf("purge --kind destination: %d %s", code, out)
	}
	if code, out, _ := cli("", "deadletters", "ls", "--kind", "destination", "-o", "name"); code != 0 || slices.Contains(strings.Fields(out), delivery) {
		t.Fatalf("after the purge: %d %q", code, out)
	}
	if code, out, _ := jg(t, "", "version"); code != 0 || !strings.HasPrefix(out, "jobgate ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %d %s", code, out)
	}
	if code, out, _ := jg(t, "", "completion", "bash"); code != 0 || !strings.Contains(out, "bash completion") {
		t.Fatalf("completion: %d %.200s", code, out)
	}
	if code, out, _ := jg(t, "", "invoke", "--help"); code != 0 || !strings.Contains(out, "invoke FUNCTION") || !strings.Contains(out, "Examples:") {
		t.Fatalf("help: %d\n%s", code, out)
	}
}

// install-logger copies the static jobgate-logger next to jobgate into a
// directory (the Kubernetes initContainer's job).
func TestInstallLogger(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	dir := filepath.Join(t.TempDir(), "bin")
	out, err := exec.Command(s.JobgateBin, "install-logger", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := filepath.Join(dir, "jobgate-logger")
	if fi, err := os.Stat(got); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s: %v", got, err)
	}
	if d := worker.InstallNotes(got); d != nil {
		t.Fatalf("the installed driver costs more: %v", d)
	}
}
