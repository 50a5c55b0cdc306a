package httptrigger

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jobgate/jobgate/internal/config"
)

func sample(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "schemas", "testdata", "valid", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func asMap(t *testing.T, v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// The real capture (lower-case headers, polymorphic queryString) comes
// out of the equivalent request. jobgate always adds requestContext.
// requestId and stageVariables, which this capture lacks.
func TestNormalizeReproducesTheRealCapture(t *testing.T) {
	t.Parallel()
	want := sample(t, "apigw-capture.json")
	tr := Trigger{Function: "f", Name: "h", Opts: config.HTTPTrigger{Path: "/ritchiechen-apigw-test", Methods: []string{"GET", "POST"}, ServiceID: "service-xxx", Stage: "test"}}
	r := httptest.NewRequest("GET", "http://service-xxx-123456.ap-shanghai.apigateway.myqcloud.com/ritchiechen-apigw-test?a=b&a=c&x=y&i", nil)
	r.RemoteAddr = "8.8.8.8:51000"
	for k, v := range want["headers"].(map[string]any) {
		if k != "host" {
			r.Header.Set(k, v.(string))
		}
	}
	got := asMap(t, tr.Normalize(r, nil, map[string]string{}, "req-1"))
	rc := got["requestContext"].(map[string]any)
	if rc["requestId"] != "req-1" || got["stageVariables"].(map[string]any)["stage"] != "test" {
		t.Fatalf("jobgate's additions: %v", got)
	}
	delete(rc, "requestId")
	delete(got, "stageVariables")
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-capture +normalized)\n%s", d)
	}
}

// The documentation sample, from its equivalent request. What API Gateway
// fills from its own configuration (identity, queryStringParameters,
// headerParameters: parameters declared on the API) is empty in jobgate,
// and headers are lower-cased as in real captures.
func TestNormalizeReproducesTheDocSample(t *testing.T) {
	t.Parallel()
	want := sample(t, "apigw-doc.json")
	tr := Trigger{Function: "f", Name: "h", Opts: config.HTTPTrigger{Path: "/test/{path}", Methods: []string{"POST"}, ServiceID: "service-f94sy04v", Stage: "release"}}
	r := httptest.NewRequest("POST", "http://service-3ei3tii4-251000691.ap-guangzhou.apigateway.myqloud.com/test/value?foo=bar&bob=alice", strings.NewReader(`{"test":"body"}`))
	r.RemoteAddr = "10.0.2.14:4000"
	r.Header = http.Header{}
	for k, v := range want["headers"].(map[string]any) {
		if k != "Host" {
			r.Header.Set(k, v.(string))
		}
	}
	got := asMap(t, tr.Normalize(r, []byte(`{"test":"body"}`), map[string]string{"path": "value"}, "c6af9ac6-****-****-9a41-93e8deadbeef"))
	lower := map[string]any{}
	for k, v := range want["headers"].(map[string]any) {
		lower[strings.ToLower(k)] = v
	}
	want["headers"] = lower
	want["requestContext"].(map[string]any)["identity"] = map[string]any{}
	want["queryStringParameters"] = map[string]any{}
	want["headerParameters"] = map[string]any{}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-doc sample +normalized)\n%s", d)
	}
}

func TestBinaryBodyIsBase64(t *testing.T) {
	t.Parallel()
	tr := Trigger{Opts: config.HTTPTrigger{Path: "/b", Methods: []string{"POST"}, ServiceID: "s", Stage: "release"}}
	body := []byte{0xff, 0x00, 0xfe, 'a'}
	r := httptest.NewRequest("POST", "/b", nil)
	ev := tr.Normalize(r, body, nil, "id")
	if !ev.IsBase64Encoded || *ev.Body != "/wD+YQ==" {
		t.Fatalf("%+v", ev)
	}
	utf := tr.Normalize(r, []byte("héllo"), nil, "id")
	if utf.IsBase64Encoded || *utf.Body != "héllo" {
		t.Fatalf("%+v", utf)
	}
}

// hmacTrigger is an HTTP trigger on /h/{who} with HMAC auth by scheme.
func hmacTrigger(t *testing.T, scheme string) Trigger {
	t.Helper()
	h := map[string]any{"secret_env": "HOOK_SECRET"}
	if scheme != "" {
		h["scheme"] = scheme
	}
	cfg := &config.Config{Functions: []config.Function{{Name: "f", Image: "r/a:1", Triggers: []config.Trigger{{Type: "http", Name: "h",
		Options: map[string]any{"path": "/h/{who}", "auth": map[string]any{"hmac_sha256": h}}}}}}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	trs, err := Triggers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return trs[0]
}

func TestHMACGitHubPreset(t *testing.T) {
	t.Setenv("HOOK_SECRET", "It's a Secret to Everybody")
	body := []byte("Hello, World!")
	// GitHub's documented example: this body and secret give this signature.
	const gh = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := SignGitHub("It's a Secret to Everybody", body); got != gh {
		t.Fatalf("SignGitHub = %s", got)
	}
	tr := hmacTrigger(t, "github")
	req := func(sig string) *http.Request {
		r := httptest.NewRequest("POST", "/h/x", nil)
		if sig != "" {
			r.Header.Set("X-Hub-Signature-256", sig)
		}
		return r
	}
	now := time.Now()
	if err := tr.Authenticate(req(gh), body, now); err != nil {
		t.Fatalf("good: %v", err)
	}
	for sig, reason := range map[string]string{"": "missing signature", "sha256=00": "mismatch", "sha1=abc": "must start with", "sha256=zz": "not hex"} {
		err := tr.Authenticate(req(sig), body, now)
		if err == nil || !strings.Contains(err.Error(), reason) || strings.Contains(err.Error(), "Secret") {
			t.Errorf("%q: %v", sig, err)
		}
	}
}

func TestHMACStripePreset(t *testing.T) {
	t.Setenv("HOOK_SECRET", "whsec_test")
	body := []byte(`{"id":"evt_1"}`)
	tr := hmacTrigger(t, "stripe")
	now := time.Unix(1_700_000_000, 0)
	req := func(sig string) *http.Request {
		r := httptest.NewRequest("POST", "/h/x", nil)
		r.Header.Set("Stripe-Signature", sig)
		return r
	}
	good := SignStripe("whsec_test", now.Unix(), body)
	if err := tr.Authenticate(req(good+",v0=ignored"), body, now); err != nil {
		t.Fatalf("good: %v", err)
	}
	if err := tr.Authenticate(req(good), body, now.Add(10*time.Minute)); err == nil || !strings.Contains(err.Error(), "replay window") {
		t.Fatalf("old: %v", err)
	}
	if err := tr.Authenticate(req(good), []byte(`{"id":"evt_2"}`), now); err == nil || !strings.Contains(err.Error(), "mismatch") {
		t.Fatalf("other body: %v", err)
	}
}

// The default scheme covers method, path, query and body with a required
// timestamp: a captured signature does not replay to another path or
// query, nor after the window, and a far-future timestamp cannot
// overflow into it (finding 3).
func TestHMACJobgateSchemeCoversTheRequest(t *testing.T) {
	t.Setenv("HOOK_SECRET", "s3cret")
	tr := hmacTrigger(t, "")
	if h := tr.Opts.Auth.HMACSHA256; h.Scheme != "jobgate" || h.Header != "X-Jobgate-Signature" || h.TimestampHeader != "X-Jobgate-Timestamp" || h.ToleranceS != 300 {
		t.Fatalf("defaults %+v", h)
	}
	body := []byte(`{"user":"alice"}`)
	now := time.Unix(1_700_000_000, 0)
	signed := func(method, target string, ts int64, sigTarget string) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		r.Header.Set("X-Jobgate-Timestamp", strconv.FormatInt(ts, 10))
		r.Header.Set("X-Jobgate-Signature", SignJobgate("s3cret", method, sigTarget, ts, body))
		return r
	}
	if err := tr.Authenticate(signed("POST", "/h/alice?x=1", now.Unix(), "/h/alice?x=1"), body, now); err != nil {
		t.Fatalf("good: %v", err)
	}
	for name, r := range map[string]*http.Request{
		"other path":   signed("POST", "/h/mallory", now.Unix(), "/h/alice"),
		"other query":  signed("POST", "/h/alice?admin=true", now.Unix(), "/h/alice"),
		"other method": signed("PUT", "/h/alice", now.Unix(), "/h/alice"),
	} {
		r.Header.Set("X-Jobgate-Signature", SignJobgate("s3cret", "POST", "/h/alice", now.Unix(), body))
		if err := tr.Authenticate(r, body, now); err == nil || !strings.Contains(err.Error(), "mismatch") {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, ts := range map[string]int64{"old": now.Unix() - 301, "future": now.Unix() + 301, "far future": 20000000000, "min": math.MinInt64, "max": math.MaxInt64} {
		err := tr.Authenticate(signed("POST", "/h/alice", ts, "/h/alice"), body, now)
		if err == nil || !strings.Contains(err.Error(), "replay window") {
			t.Errorf("%s timestamp %d: %v", name, ts, err)
		}
	}
	noTS := signed("POST", "/h/alice", now.Unix(), "/h/alice")
	noTS.Header.Del("X-Jobgate-Timestamp")
	if err := tr.Authenticate(noTS, body, now); err == nil || !strings.Contains(err.Error(), "timestamp") {
		t.Errorf("no timestamp: %v", err)
	}
}

// An empty secret refuses everything, even a MAC keyed with "" (finding 1;
// Resolve refuses such a config too: internal/config).
func TestHMACEmptySecretFailsClosed(t *testing.T) {
	t.Setenv("HOOK_SECRET", "")
	tr := hmacTrigger(t, "github")
	r := httptest.NewRequest("POST", "/h/x", nil)
	r.Header.Set("X-Hub-Signature-256", SignGitHub("", []byte("x")))
	if err := tr.Authenticate(r, []byte("x"), time.Now()); err == nil {
		t.Fatal("a body signed with the empty key was accepted")
	}
}

// Credentials and the trigger's signature never enter the event; the
// allow- and drop-lists apply (finding 2).
func TestHeaderPolicy(t *testing.T) {
	t.Setenv("HOOK_SECRET", "s")
	tr := hmacTrigger(t, "github")
	r := httptest.NewRequest("POST", "/h/x", nil)
	for k, v := range map[string]string{"Authorization": "Bearer tok", "Proxy-Authorization": "Basic x", "Cookie": "sid=1",
		"X-Hub-Signature-256": "sha256=00", "X-Github-Event": "push", "X-Internal": "no", "Content-Type": "application/json"} {
		r.Header.Set(k, v)
	}
	headers := func() map[string]string { return tr.Normalize(r, []byte("{}"), nil, "id").Headers }
	got := headers()
	for _, h := range []string{"authorization", "proxy-authorization", "cookie", "x-hub-signature-256"} {
		if _, ok := got[h]; ok {
			t.Errorf("%s forwarded into the event", h)
		}
	}
	if got["x-github-event"] != "push" || got["x-internal"] != "no" {
		t.Fatalf("default forwards the rest: %v", got)
	}
	tr.Opts.DropHeaders = []string{"x-internal"}
	if _, ok := headers()["x-internal"]; ok {
		t.Error("drop_headers ignored")
	}
	tr.Opts.ForwardHeaders = []string{"X-GitHub-Event", "Authorization"}
	got = headers()
	if len(got) != 2 || got["x-github-event"] != "push" || got["host"] == "" {
		t.Fatalf("forward_headers: %v (credentials never, even when listed)", got)
	}
}

func TestQueryStringForms(t *testing.T) {
	t.Parallel()
	got := asMap(t, QueryString("a=b&a=c&x=y&i&sp=a+b&enc=%2F%3D"))
	want := map[string]any{"a": []any{"b", "c"}, "x": "y", "i": true, "sp": "a b", "enc": "/="}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatal(d)
	}
}

// A header value that is not UTF-8 arrives base64 with headersEncoding
// naming it, byte-exact (finding 11); text values stay as they are.
func TestBinaryHeaderValueIsBase64(t *testing.T) {
	t.Parallel()
	tr := Trigger{Function: "f", Name: "h", Opts: config.HTTPTrigger{Path: "/b", Methods: []string{"POST"}}}
	r := httptest.NewRequest("POST", "/b", nil)
	r.Header.Set("X-Bin", "\xff\x00\xfe")
	r.Header.Set("X-Text", "héllo")
	ev := tr.Normalize(r, nil, nil, "id")
	if ev.Headers["x-bin"] != "/wD+" || ev.HeadersEncoding["x-bin"] != "base64" || ev.Headers["x-text"] != "héllo" || len(ev.HeadersEncoding) != 1 {
		t.Fatalf("headers %v encodings %v", ev.Headers, ev.HeadersEncoding)
	}
}

// Standard Webhooks: the spec's own example verifies, a rotated secret's
// second signature is accepted, and a replay under a new webhook-id (the
// dedupe key) does not authenticate.
func TestHMACStandardWebhooksPreset(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	t.Setenv("HOOK_SECRET", secret)
	body := []byte(`{"test": 2432232314}`)
	// standardwebhooks.com's example: this id, time, body and secret.
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if got, err := SignStandard(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body); err != nil || got != want {
		t.Fatalf("SignStandard = %s %v", got, err)
	}
	tr := hmacTrigger(t, config.SchemeStandard)
	if tr.Opts.DedupeHeader != "Webhook-Id" {
		t.Fatalf("dedupe header %q, want Webhook-Id", tr.Opts.DedupeHeader)
	}
	now := time.Unix(1614265330, 0)
	req := func(id, sig string) *http.Request {
		r := httptest.NewRequest("POST", "/h/x", bytes.NewReader(body))
		r.Header.Set("Webhook-Id", id)
		r.Header.Set("Webhook-Timestamp", "1614265330")
		r.Header.Set("Webhook-Signature", sig)
		return r
	}
	if err := tr.Authenticate(req("msg_p5jXN8AQM9LWM0D4loKWxJek", "v1,AAAA v1a,x "+want), body, now); err != nil {
		t.Errorf("a list with one right signature: %v", err)
	}
	if err := tr.Authenticate(req("msg_another", want), body, now); err == nil {
		t.Error("a replay under a new webhook-id authenticated")
	}
	if err := tr.Authenticate(req("msg_p5jXN8AQM9LWM0D4loKWxJek", want), body, now.Add(time.Hour)); err == nil {
		t.Error("a stale timestamp authenticated")
	}
}

// With a dedupe header, the jobgate scheme signs its value: a captured
// request replayed with a new X-Request-Id does not authenticate (on the
// main of 2026-12-04 it did, and ran again).
func TestHMACJobgateSchemeSignsTheDedupeID(t *testing.T) {
	t.Setenv("HOOK_SECRET", "s3cret")
	cfg := &config.Config{Functions: []config.Function{{Name: "f", Image: "r/a:1", Triggers: []config.Trigger{{Type: "http", Name: "h",
		Options: map[string]any{"path": "/h", "dedupe_header": "X-Request-Id", "auth": map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET"}}}}}}}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	trs, err := Triggers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	body, now := []byte(`{"a":1}`), time.Unix(1700000000, 0)
	req := func(id string) *http.Request {
		r := httptest.NewRequest("POST", "/h", bytes.NewReader(body))
		r.Header.Set("X-Request-Id", id)
		r.Header.Set("X-Jobgate-Timestamp", "1700000000")
		r.Header.Set("X-Jobgate-Signature", SignJobgateID("s3cret", "POST", "/h", "delivery-1", now.Unix(), body))
		return r
	}
	if err := trs[0].Authenticate(req("delivery-1"), body, now); err != nil {
		t.Fatalf("signed with its id: %v", err)
	}
	if err := trs[0].Authenticate(req("delivery-2"), body, now); err == nil {
		t.Error("a replay under a new dedupe id authenticated")
	}
}
