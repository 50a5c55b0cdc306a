package httptrigger

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/schemas"
)

// FuzzNormalizeAndAuth: for any request, a correct jobgate signature
// passes and a changed body fails, auth never panics, and the event
// validates against SCF's API Gateway schema with the body byte-exact.
func FuzzNormalizeAndAuth(f *testing.F) {
	f.Add("POST", "/h/alice?x=1&x=2&flag", "X-Custom", "v", []byte(`{"a":1}`))
	f.Add("PUT", "/h/%2F?q=a+b", "X-Bin", "\xff\x00", []byte{0xff, 0x00, 0xfe})
	f.Add("GET", "/h/x", "Cookie", "sid=1", []byte(nil))
	f.Add("POST", "/h/é?é=é", "X-Jobgate-Signature", "v1=zz", []byte("é"))
	f.Setenv("HOOK_SECRET", "fuzz-secret")
	cfg := &config.Config{Functions: []config.Function{{Name: "f", Image: "r/a:1", Triggers: []config.Trigger{{Type: "http", Name: "h",
		Options: map[string]any{"path": "/h/{who}", "auth": map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET"}}}}}}}}
	if err := config.Complete(cfg, "fuzz"); err != nil {
		f.Fatal(err)
	}
	trs, err := Triggers(cfg)
	if err != nil {
		f.Fatal(err)
	}
	tr := trs[0]
	sch, err := schemas.Compile(schemas.APIGWEvent)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, method, target, name, value string, body []byte) {
		u, err := url.ParseRequestURI(target)
		// A server sees origin-form targets ("/path?query").
		if err != nil || !strings.HasPrefix(target, "/") || u.Opaque != "" || !validToken(method) || !validToken(name) {
			return
		}
		r := &http.Request{Method: method, URL: u, Header: http.Header{}, Host: "example.test", RemoteAddr: "192.0.2.1:1234"}
		r.Header.Set(name, value)
		_ = tr.Authenticate(r, body, now) // whatever it says, it must not panic
		r.Header.Set("X-Jobgate-Timestamp", "1700000000")
		r.Header.Set("X-Jobgate-Signature", SignJobgate("fuzz-secret", method, u.RequestURI(), now.Unix(), body))
		if err := tr.Authenticate(r, body, now); err != nil {
			t.Fatalf("a correct signature was refused: %v", err)
		}
		if err := tr.Authenticate(r, append(append([]byte{}, body...), 'x'), now); err == nil {
			t.Fatal("a changed body was accepted")
		}
		ev := tr.Normalize(r, body, map[string]string{"who": "x"}, "id")
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if vs, err := schemas.Validate(sch, inst); err != nil || len(vs) > 0 {
			t.Fatalf("event does not validate: %v %v\n%s", vs, err, raw)
		}
		if ev.Body != nil {
			got := []byte(*ev.Body)
			if ev.IsBase64Encoded {
				if got, err = base64.StdEncoding.DecodeString(*ev.Body); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("body %q, sent %q", got, body)
			}
		}
	})
}

// validToken reports whether s is an HTTP token (method, header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}

// FuzzStandardSignature: any webhook-signature header parses without a
// panic; a right signature anywhere in the list verifies, none does not.
func FuzzStandardSignature(f *testing.F) {
	f.Add("v1,AAAA", "msg_1", []byte(`{}`))
	f.Add("v1, v1,,, v2,abc v1,====", "", []byte("x"))
	f.Add("\x00 v1,\xff", "id with spaces", []byte(nil))
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	f.Setenv("HOOK_SECRET", secret)
	cfg := &config.Config{Functions: []config.Function{{Name: "f", Image: "r/a:1", Triggers: []config.Trigger{{Type: "http", Name: "h",
		Options: map[string]any{"path": "/h", "auth": map[string]any{"hmac_sha256": map[string]any{"secret_env": "HOOK_SECRET", "scheme": "standard"}}}}}}}}
	if err := config.Complete(cfg, "fuzz"); err != nil {
		f.Fatal(err)
	}
	trs, err := Triggers(cfg)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, noise, id string, body []byte) {
		if strings.ContainsAny(noise+id, "\r\n\x00") {
			return // not a header value net/http would deliver
		}
		req := func(sig string) *http.Request {
			r := &http.Request{Method: "POST", URL: &url.URL{Path: "/h"}, Header: http.Header{}}
			r.Header.Set("Webhook-Id", id)
			r.Header.Set("Webhook-Timestamp", "1700000000")
			r.Header.Set("Webhook-Signature", sig)
			return r
		}
		good, err := SignStandard(secret, id, now.Unix(), body)
		if err != nil {
			t.Fatal(err)
		}
		_ = trs[0].Authenticate(req(noise), body, now) // never panics
		if err := trs[0].Authenticate(req(noise+" "+good), body, now); err != nil && !strings.Contains(noise, "base64") {
			var ae *AuthError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), "base64") {
				t.Fatalf("a right signature after %q: %v", noise, err)
			}
		}
		if trs[0].Authenticate(req(noise), append(body, 'x'), now) == nil && !strings.Contains(noise, good) {
			t.Fatalf("noise %q verified a changed body", noise)
		}
	})
}
