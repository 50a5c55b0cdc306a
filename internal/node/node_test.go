package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testenv"
	"github.com/jobgate/jobgate/internal/testjob"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestInvokeRunsToFinished(t *testing.T) {
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
	for _, l := range st.Lines(t, rec.RequestId) {
		t.Logf("%s %s", l.Stream, l.Line)
	}
}
