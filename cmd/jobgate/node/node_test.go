package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestInvokeRunsToFinished(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartStack(t, config.Function{Name: "hello", Image: ref, Args: []string{"event", "stderr", "bye"}})
	resp, err := http.Post(st.URL+"/v1/functions/hello/invoke", "application/json", bytes.NewReader([]byte(`{"a":"b"}`)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("invoke: %d %s", resp.StatusCode, body)
	}
	var rec record.Record
	if err := json.Unmarshal(body, &rec); err != nil {
		t.Fatal(err)
	}
	if !rec.Status.Started() {
		t.Fatalf("status after wait=scheduled = %s", rec.Status)
	}
	end := st.WaitEnd(t, rec.RequestId, 30*time.Second)
	if end.Status != record.Finished {
		t.Fatalf("end = %+v", end)
	}
	var got []string
	for _, l := range st.Lines(t, rec.RequestId) {
		got = append(got, l.Stream+" "+strings.Fields(l.Line)[0])
	}
	if strings.Join(got, "|") != "platform START|stdout {\"a\":\"b\"}|stderr bye|platform END|platform Report" &&
		strings.Join(got, "|") != "platform START|stderr bye|stdout {\"a\":\"b\"}|platform END|platform Report" {
		t.Fatalf("log %v", got)
	}
	// The counters saw it (the running gauge drops once the supervisor
	// has removed the instance, just after the record ended).
	testenv.Eventually(t, 10*time.Second, "the running gauge back at 0", func() bool {
		_, body := st.Do(t, "GET", "/metrics", nil, nil)
		return strings.Contains(string(body), "jobgate_instances_running 0")
	})
	code, body := st.Do(t, "GET", "/metrics", nil, nil)
	for _, want := range []string{
		`jobgate_events_in_total{function="hello",source="API"} 1`,
		`jobgate_outcomes_total{function="hello",status_code="200"} 1`,
		`jobgate_instances_running 0`,
		`jobgate_queue_up 1`,
		`jobgate_queue_tasks{state="pending"} 0`,
		`jobgate_queue_tasks{state="completed"} 1`,
		`jobgate_schedule_seconds_count{function="hello"} 1`,
		`jobgate_image_pull_seconds_count{function="hello"} 1`,
		`jobgate_http_requests_total{code="200",route="POST /v1/functions/{name}/invoke"} 1`,
		`jobgate_deadletters 0`,
		`jobgate_build_info{commit=`,
	} {
		if code != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

// A worker-only process serves /metrics, /healthz and /readyz at
// worker.listen: its counters (outcomes, schedule latency, running) are
// scraped there, not lost for want of a gateway.
func TestWorkerOnlyServesMetrics(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	redisAddr := testenv.Redis(t)
	fn := config.Function{Name: "hello", Image: ref, Args: []string{"echo", "hi"}}
	wcfg := s.Config(t, redisAddr, fn)
	port := testenv.FreePort(t)
	wcfg.Worker.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	testenv.StartStackWith(t, s, wcfg, node.Options{Role: node.RoleWorker})
	gw := testenv.StartStackWith(t, s, s.Config(t, redisAddr, fn), node.Options{Role: node.RoleGateway})
	rec := gw.Invoke(t, "hello", "?wait=none", []byte(`{}`), 202)
	gw.WaitEnd(t, rec.RequestId, 30*time.Second)
	get := func(path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, `"containerd":"ok"`) {
		t.Fatalf("readyz: %d %s", code, body)
	}
	testenv.Eventually(t, 10*time.Second, "the worker's outcome counter", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `jobgate_outcomes_total{function="hello",status_code="200"} 1`) &&
			strings.Contains(body, `jobgate_schedule_seconds_count{function="hello"} 1`)
	})
}
