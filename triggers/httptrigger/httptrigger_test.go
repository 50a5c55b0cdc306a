package httptrigger

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

func TestHMAC(t *testing.T) {
	t.Setenv("HOOK_SECRET", "It's a Secret to Everybody")
	body := []byte("Hello, World!")
	// GitHub's documented example: this body and secret give this signature.
	const gh = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := Sign("It's a Secret to Everybody", "sha256=", body); got != gh {
		t.Fatalf("Sign = %s", got)
	}
	cfg := &config.Config{Functions: []config.Function{{Name: "f", Image: "r/a:1", Triggers: []config.Trigger{{Type: "http", Name: "h",
		Options: map[string]any{"path": "/h", "auth": map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET"}}}}}}}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	trs, err := Triggers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := trs[0]
	req := func(sig string) *http.Request {
		r := httptest.NewRequest("POST", "/h", nil)
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
	// With a timestamp header the MAC covers "<ts>.<body>" within a window.
	tr.Opts.Auth.HMACSHA256.TimestampHeader = "X-Timestamp"
	ts := func(at time.Time) *http.Request {
		r := req(Sign("It's a Secret to Everybody", "sha256=", append([]byte(itoa(at.Unix())+"."), body...)))
		r.Header.Set("X-Timestamp", itoa(at.Unix()))
		return r
	}
	if err := tr.Authenticate(ts(now), body, now); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	if err := tr.Authenticate(ts(now.Add(-time.Hour)), body, now); err == nil || !strings.Contains(err.Error(), "replay window") {
		t.Fatalf("replayed: %v", err)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestQueryStringForms(t *testing.T) {
	t.Parallel()
	got := asMap(t, QueryString("a=b&a=c&x=y&i&sp=a+b&enc=%2F%3D"))
	want := map[string]any{"a": []any{"b", "c"}, "x": "y", "i": true, "sp": "a b", "enc": "/="}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatal(d)
	}
}
