package httptrigger_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers/httptrigger"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A webhook with path parameters, repeated and valueless query keys, a
// binary body and GitHub-style HMAC: the container sees the exact event.
func TestWebhookReachesTheContainer(t *testing.T) {
	t.Setenv("HOOK_SECRET", "shh")
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartStack(t, config.Function{Name: "hooked", Image: ref, Args: []string{"event"},
		Triggers: []config.Trigger{{Type: "http", Name: "gh", Options: map[string]any{
			"path": "/hooks/{org}/{repo}", "methods": []any{"POST"},
			"dedupe_header": "X-GitHub-Delivery",
			"auth":          map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET", "scheme": "github"}}}}}})

	body := []byte{0x89, 'P', 'N', 'G', 0x00, 0xff}
	post := func(sig string, hdr map[string]string) (int, []byte) {
		h := map[string]string{"Content-Type": "application/octet-stream", "X-Custom": "one"}
		if sig != "" {
			h["X-Hub-Signature-256"] = sig
		}
		for k, v := range hdr {
			h[k] = v
		}
		return st.Do(t, "POST", "/hooks/acme/rocket?tag=a&tag=b&dry&q=x+y", body, h)
	}
	// Bad and missing signatures: 401 with the reason, nothing queued.
	for sig, reason := range map[string]string{"": "missing signature header", "sha256=" + strings.Repeat("0", 64): "signature mismatch"} {
		code, resp := post(sig, nil)
		if code != 401 || !strings.Contains(string(resp), reason) || strings.Contains(string(resp), "shh") {
			t.Fatalf("sig %q: %d %s", sig, code, resp)
		}
	}
	if recs, _, _ := st.Records.List(t.Context(), record.Filter{}, 10, ""); len(recs) != 0 {
		t.Fatalf("refused requests were queued: %d", len(recs))
	}
	// Wrong method: 405.
	if code, _ := st.Do(t, "GET", "/hooks/acme/rocket", nil, nil); code != 405 {
		t.Fatalf("GET: %d", code)
	}

	code, resp := post(httptrigger.SignGitHub("shh", body), map[string]string{"X-GitHub-Delivery": "delivery-1", "Authorization": "Bearer leaked?"})
	if code != 202 {
		t.Fatalf("good signature: %d %s", code, resp)
	}
	var ack struct{ RequestId string }
	if err := json.Unmarshal(resp, &ack); err != nil || ack.RequestId == "" {
		t.Fatalf("answer %s", resp)
	}
	// The same delivery again (dedupe_header): same RequestId, one run.
	_, resp2 := post(httptrigger.SignGitHub("shh", body), map[string]string{"X-GitHub-Delivery": "delivery-1"})
	if !bytes.Contains(resp2, []byte(ack.RequestId)) {
		t.Fatalf("redelivery got %s", resp2)
	}
	// The key reused for another request: 409, not the old run (finding 4).
	other := []byte("another body")
	code, resp = st.Do(t, "POST", "/hooks/acme/rocket", other, map[string]string{"X-Hub-Signature-256": httptrigger.SignGitHub("shh", other), "X-GitHub-Delivery": "delivery-1"})
	if code != 409 || !strings.Contains(string(resp), "IdempotencyKeyReused") {
		t.Fatalf("reused key: %d %s", code, resp)
	}
	// A header the trigger does not name as its dedupe key decides nothing.
	code, resp = st.Do(t, "POST", "/hooks/acme/rocket", other, map[string]string{"X-Hub-Signature-256": httptrigger.SignGitHub("shh", other), "X-Request-Id": "delivery-1"})
	if code != 202 || bytes.Contains(resp, []byte(ack.RequestId)) {
		t.Fatalf("X-Request-Id without dedupe_header: %d %s", code, resp)
	}
	end := st.WaitEnd(t, ack.RequestId, 30*time.Second)
	out := st.Stdout(t, ack.RequestId)
	if end.Status != record.Finished || len(out) != 1 || end.RequestSource != "TRIGGER_HTTP" || end.TriggerName != "gh" {
		t.Fatalf("%+v %v", end, out)
	}
	var ev schemas.APIGateway
	dec := json.NewDecoder(strings.NewReader(out[0]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("event %s: %v", out[0], err)
	}
	if !ev.IsBase64Encoded || *ev.Body != "iVBORwD/" {
		t.Fatalf("body %v %q", ev.IsBase64Encoded, *ev.Body)
	}
	if d := cmp.Diff(map[string]string{"org": "acme", "repo": "rocket"}, ev.PathParameters); d != "" {
		t.Fatal(d)
	}
	qs, _ := json.Marshal(ev.QueryString)
	if string(qs) != `{"dry":true,"q":"x y","tag":["a","b"]}` {
		t.Fatalf("queryString %s", qs)
	}
	if ev.Path != "/hooks/acme/rocket" || ev.HTTPMethod != "POST" || ev.RequestContext.Path != "/hooks/{org}/{repo}" ||
		ev.RequestContext.HTTPMethod != "POST" || ev.RequestContext.RequestID != ack.RequestId || ev.RequestContext.SourceIP != "127.0.0.1" {
		t.Fatalf("event %s", out[0])
	}
	if ev.Headers["x-custom"] != "one" || ev.Headers["content-type"] != "application/octet-stream" || ev.Headers["x-github-delivery"] != "delivery-1" {
		t.Fatalf("headers %v", ev.Headers)
	}
	for _, h := range []string{"authorization", "x-hub-signature-256"} {
		if _, ok := ev.Headers[h]; ok {
			t.Fatalf("%s reached the job: %v", h, ev.Headers)
		}
	}
	// wait=scheduled answers once started, in the brief form: a webhook
	// sender gets its RequestId and status, never the record's node,
	// image digest or messages (on the main of 2026-12-04 it got all).
	req, _ := http.NewRequest("POST", st.URL+"/hooks/acme/rocket?wait=scheduled", bytes.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", httptrigger.SignGitHub("shh", body))
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var rec record.Record
	_ = json.Unmarshal(raw, &rec)
	if r.StatusCode != 200 || !rec.Status.Started() || rec.RequestId == "" {
		t.Fatalf("wait=scheduled: %d %s", r.StatusCode, raw)
	}
	for _, field := range []string{"Node", "ImageDigest", "Message", "FunctionName", "EnqueueTime"} {
		if strings.Contains(string(raw), `"`+field+`"`) {
			t.Errorf("a webhook sender was told %s: %s", field, raw)
		}
	}
}

func TestWebhookOversizeIs413(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	st := testenv.StartStack(t, config.Function{Name: "f", Image: s.Registry + "/test/job:1",
		Triggers: []config.Trigger{{Type: "http", Name: "h", Options: map[string]any{"path": "/in"}}}})
	code, body := st.Do(t, "POST", "/in", bytes.Repeat([]byte("x"), 140_000), nil)
	if code != 413 || !strings.Contains(string(body), "EventTooLarge") {
		t.Fatalf("%d %s", code, body)
	}
	// Fits as a body but not once wrapped in the event: still 413.
	code, body = st.Do(t, "POST", "/in", bytes.Repeat([]byte("x"), 131_000), nil)
	if code != 413 {
		t.Fatalf("%d %s", code, body)
	}
}

// bodyProbe fails the test if the gateway reads the body.
type bodyProbe struct{ t *testing.T }

func (b bodyProbe) Read([]byte) (int, error) {
	b.t.Error("the body of an unauthenticated request was read")
	return 0, io.EOF
}

// An unauthenticated webhook is refused before its body is read (finding
// 5): a sender without the token cannot make the gateway read, or wait
// for, a body.
func TestUnauthenticatedWebhookBodyIsNeverRead(t *testing.T) {
	t.Setenv("HOOK_TOKEN", "t0ken")
	t.Setenv("HOOK_SECRET", "s3cret")
	s := testenv.Shared(t)
	st := testenv.StartStack(t, config.Function{Name: "f", Image: s.Registry + "/test/job:1",
		Triggers: []config.Trigger{
			{Type: "http", Name: "bearer", Options: map[string]any{"path": "/b", "auth": map[string]any{"bearer": map[string]any{"token_env": "HOOK_TOKEN"}}}},
			{Type: "http", Name: "hmac", Options: map[string]any{"path": "/s", "auth": map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET"}}}},
		}})
	for path, hdr := range map[string]map[string]string{
		"/b": {"Authorization": "Bearer wrong"},
		"/s": {"X-Jobgate-Signature": "v1=00", "X-Jobgate-Timestamp": "1"}, // outside the window
	} {
		req := httptest.NewRequest("POST", path, bodyProbe{t})
		req.ContentLength = 1 << 20
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		st.Node.Gateway.ServeHTTP(w, req)
		if w.Code != 401 || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
	}
}
