package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// CloudEvents through the invoke API and an HTTP trigger, in binary and
// structured mode: the job sees SCF's shape with the attributes as "ce",
// the same id + source is one invocation, an invalid one is 400.
func TestCloudEvents(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t,
		config.Function{Name: "fn", Image: jobImage(t), Args: []string{"event"}},
		config.Function{Name: "hooked", Image: jobImage(t), Args: []string{"event"}, Triggers: []config.Trigger{
			{Type: "http", Name: "orders", Options: map[string]any{"path": "/hooks/orders", "methods": []any{"POST"}}}}})
	post := func(path string, hdr map[string]string, body string, want int) string {
		t.Helper()
		code, resp := st.Do(t, http.MethodPost, path, []byte(body), hdr)
		if code != want {
			t.Fatalf("%s: %d %s", path, code, resp)
		}
		var ack struct{ RequestId string }
		_ = json.Unmarshal(resp, &ack)
		return ack.RequestId
	}
	binary := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "b-1", "Ce-Source": "/shop", "Ce-Type": "com.example.order",
		"Ce-Comexampleext": "v", "Content-Type": "application/json"}
	structured := map[string]string{"Content-Type": "application/cloudevents+json"}
	const invoke = "/v1/functions/fn/invoke?wait=none"

	first := post(invoke, binary, `{"order":1}`, http.StatusAccepted)
	if again := post(invoke, binary, `{"order":1}`, http.StatusAccepted); again != first {
		t.Errorf("the same id and source again: %s, want %s", again, first)
	}
	second := post(invoke, structured, `{"specversion":"1.0","id":"s-1","source":"/shop","type":"com.example.order",`+
		`"time":"2026-11-29T10:00:00+08:00","data":{"order":2}}`, http.StatusAccepted)
	post(invoke, map[string]string{"Ce-Specversion": "1.0", "Ce-Source": "/shop", "Ce-Type": "t"}, `{}`, http.StatusBadRequest)
	post(invoke, structured, `{"specversion":"1.0","id":"s-2","source":"/shop","type":"t","data":"text"}`, http.StatusBadRequest)
	hooked := post("/hooks/orders", binary, `{"order":3}`, http.StatusAccepted)
	if again := post("/hooks/orders", binary, `{"order":3}`, http.StatusAccepted); again != hooked {
		t.Errorf("the same CloudEvent to the trigger again: %s, want %s", again, hooked)
	}

	want := map[string]string{
		first:  `{"ce":{"comexampleext":"v","datacontenttype":"application/json","id":"b-1","source":"/shop","specversion":"1.0","type":"com.example.order"},"order":1}`,
		second: `{"ce":{"id":"s-1","source":"/shop","specversion":"1.0","time":"2026-11-29T02:00:00Z","type":"com.example.order"},"order":2}`,
	}
	for id, event := range want {
		if end := st.WaitEnd(t, id, time.Minute); end.Status != record.Finished {
			t.Fatalf("%s: %+v", id, end)
		}
		if out := st.Stdout(t, id); len(out) != 1 || out[0] != event {
			t.Errorf("%s saw %q, want %s", id, out, event)
		}
	}
	if end := st.WaitEnd(t, hooked, time.Minute); end.Status != record.Finished {
		t.Fatalf("trigger: %+v", end)
	}
	out := st.Stdout(t, hooked)
	var ev struct {
		CE      map[string]string `json:"ce"`
		Body    string            `json:"body"`
		Headers map[string]string `json:"headers"`
	}
	if len(out) != 1 || json.Unmarshal([]byte(out[0]), &ev) != nil {
		t.Fatalf("trigger event %q", out)
	}
	if ev.CE["id"] != "b-1" || ev.CE["source"] != "/shop" || ev.CE["comexampleext"] != "v" || ev.Body != `{"order":3}` || ev.Headers["ce-id"] != "b-1" {
		t.Errorf("trigger event %s", out[0])
	}
	// One run each: the resends were the same invocations.
	code, body := st.Do(t, http.MethodGet, "/v1/invocations?limit=100", nil, nil)
	if n := strings.Count(string(body), `"RequestId"`); code != http.StatusOK || n != 3 {
		t.Errorf("%d invocations listed, want 3: %s", n, body)
	}
}
