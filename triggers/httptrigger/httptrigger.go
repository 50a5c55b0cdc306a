// Package httptrigger turns an HTTP request to a configured webhook path
// into SCF's API Gateway event, after checking the trigger's auth. The
// gateway serves the routes and submits the events.
package httptrigger

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers"
)

// Trigger is one configured HTTP trigger.
type Trigger struct {
	Function string
	Name     string
	Opts     config.HTTPTrigger
}

// Source is the RequestSource of webhook events (SCF's DLQ Body.RequestSource).
const Source = "TRIGGER_HTTP"

// Triggers lists the HTTP triggers of a config.
func Triggers(cfg *config.Config) ([]Trigger, error) {
	var out []Trigger
	for _, fn := range cfg.Functions {
		for _, tr := range fn.Triggers {
			if tr.Type != config.TriggerHTTP {
				continue
			}
			out = append(out, Trigger{Function: fn.Name, Name: tr.Name, Opts: tr.HTTP()})
		}
	}
	return out, nil
}

// configuredMethod is requestContext.httpMethod: the API's configured
// method, ANY when several are.
func (t Trigger) configuredMethod() string {
	if len(t.Opts.Methods) == 1 {
		return t.Opts.Methods[0]
	}
	return "ANY"
}

// Normalize builds the event. pathParams are the {name} segments' values;
// requestID becomes requestContext.requestId.
func (t Trigger) Normalize(r *http.Request, body []byte, pathParams map[string]string, requestID string) schemas.APIGateway {
	ev := schemas.APIGateway{
		RequestContext: schemas.APIGatewayContext{
			ServiceID: t.Opts.ServiceID, Path: t.Opts.Path, HTTPMethod: t.configuredMethod(), RequestID: requestID,
			Identity: map[string]string{}, SourceIP: sourceIP(r), Stage: t.Opts.Stage,
		},
		Headers:               map[string]string{},
		PathParameters:        pathParams,
		QueryStringParameters: map[string]string{},
		HeaderParameters:      map[string]string{},
		StageVariables:        map[string]string{"stage": t.Opts.Stage},
		Path:                  r.URL.Path,
		HTTPMethod:            r.Method,
		QueryString:           QueryString(r.URL.RawQuery),
	}
	if ev.PathParameters == nil {
		ev.PathParameters = map[string]string{}
	}
	raw := map[string][]byte{}
	for k, vs := range r.Header {
		if t.forwards(k) {
			raw[strings.ToLower(k)] = []byte(strings.Join(vs, ", "))
		}
	}
	ev.Headers, ev.HeadersEncoding = triggers.TextValues(raw)
	if r.Host != "" {
		ev.Headers["host"] = r.Host
	}
	if len(body) > 0 || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		s := string(body)
		if !utf8.Valid(body) {
			s = base64.StdEncoding.EncodeToString(body)
			ev.IsBase64Encoded = true
		}
		ev.Body = &s
	}
	return ev
}

// neverForwarded are request headers no event carries: credentials a
// job (and anyone reading its record or dead letter) must not see.
var neverForwarded = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true}

// forwards reports whether the header (canonical name) enters the event:
// not a credential nor the trigger's signature, within forward_headers
// when set, not in drop_headers.
func (t Trigger) forwards(name string) bool {
	name = http.CanonicalHeaderKey(name)
	if neverForwarded[name] {
		return false
	}
	if a := t.Opts.Auth; a != nil && a.HMACSHA256 != nil && http.CanonicalHeaderKey(a.HMACSHA256.Header) == name {
		return false
	}
	for _, d := range t.Opts.DropHeaders {
		if http.CanonicalHeaderKey(d) == name {
			return false
		}
	}
	if len(t.Opts.ForwardHeaders) == 0 {
		return true
	}
	for _, f := range t.Opts.ForwardHeaders {
		if http.CanonicalHeaderKey(f) == name {
			return true
		}
	}
	return false
}

// QueryString parses a raw query into SCF's forms: a string; an array
// for a repeated key; true for a key without a value ("?flag").
func QueryString(raw string) map[string]schemas.QueryValue {
	out := map[string]schemas.QueryValue{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, hasValue := strings.Cut(part, "=")
		key, err := urlUnescape(k)
		if err != nil {
			key = k
		}
		q, seen := out[key]
		if !hasValue {
			if !seen {
				out[key] = schemas.QueryValue{Flag: true}
			}
			continue
		}
		val, err := urlUnescape(v)
		if err != nil {
			val = v
		}
		if q.Flag {
			q = schemas.QueryValue{}
		}
		q.Values = append(q.Values, val)
		out[key] = q
	}
	return out
}

func urlUnescape(s string) (string, error) { return url.QueryUnescape(s) }

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// AuthError says why a request was refused (never with a secret in it).
type AuthError struct{ Reason string }

func (e *AuthError) Error() string { return e.Reason }

// Precheck is the part of the trigger's auth that needs no body: all of a
// bearer token; an HMAC signature's presence, form and timestamp. The
// gateway runs it before reading the body, so an unauthenticated sender
// cannot make it read (or wait for) one.
func (t Trigger) Precheck(r *http.Request, now time.Time) error {
	a := t.Opts.Auth
	switch {
	case a == nil:
		return nil
	case a.Bearer != nil:
		want := os.Getenv(a.Bearer.TokenEnv)
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return &AuthError{"missing bearer token"}
		}
		// An empty token is a validate error; refuse here too (fail closed).
		if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			return &AuthError{"invalid bearer token"}
		}
		return nil
	case a.HMACSHA256 != nil:
		_, err := parseSignature(a.HMACSHA256, r, now)
		return err
	}
	return &AuthError{"trigger auth is not configured"}
}

// Verify checks an HMAC signature against the raw body (Precheck passed).
func (t Trigger) Verify(r *http.Request, body []byte, now time.Time) error {
	a := t.Opts.Auth
	if a == nil || a.HMACSHA256 == nil {
		return nil
	}
	h := a.HMACSHA256
	sig, err := parseSignature(h, r, now)
	if err != nil {
		return err
	}
	secret := os.Getenv(h.SecretEnv)
	if secret == "" {
		return &AuthError{"trigger secret is empty"} // a validate error: fail closed
	}
	key := []byte(secret)
	if h.Scheme == config.SchemeStandard {
		if key, err = standardKey(secret); err != nil {
			return &AuthError{"trigger secret: " + err.Error()}
		}
	}
	var id string
	if t.Opts.DedupeHeader != "" {
		id = r.Header.Get(t.Opts.DedupeHeader)
	}
	want := macKey(key, signedBytes(h.Scheme, sig.timestamp, id, r, body))
	for _, got := range sig.macs {
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return &AuthError{"signature mismatch"}
}

// Authenticate is Precheck then Verify.
func (t Trigger) Authenticate(r *http.Request, body []byte, now time.Time) error {
	if err := t.Precheck(r, now); err != nil {
		return err
	}
	return t.Verify(r, body, now)
}

// signature is a parsed signature header: the MACs it offers and the
// timestamp they cover ("" for GitHub's, which has none).
type signature struct {
	timestamp string
	macs      [][]byte
}

func parseSignature(h *config.HMACAuth, r *http.Request, now time.Time) (signature, error) {
	raw := r.Header.Get(h.Header)
	if raw == "" {
		return signature{}, &AuthError{"missing signature header " + h.Header}
	}
	var sig signature
	switch h.Scheme {
	case config.SchemeGitHub:
		hexSig, ok := strings.CutPrefix(raw, "sha256=")
		if !ok {
			return sig, &AuthError{fmt.Sprintf("signature header %s must start with \"sha256=\"", h.Header)}
		}
		b, err := hex.DecodeString(hexSig)
		if err != nil {
			return sig, &AuthError{"signature is not hex"}
		}
		return signature{macs: [][]byte{b}}, nil
	case config.SchemeStandard:
		// "v1,<base64> v1,<base64>": several while a secret rotates.
		for _, part := range strings.Fields(raw) {
			v, b64, ok := strings.Cut(part, ",")
			if !ok || v != "v1" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return sig, &AuthError{"signature is not base64"}
			}
			sig.macs = append(sig.macs, b)
		}
		if len(sig.macs) == 0 {
			return sig, &AuthError{"no v1 signature in " + h.Header}
		}
		sig.timestamp = r.Header.Get(h.TimestampHeader)
	case config.SchemeStripe:
		for _, part := range strings.Split(raw, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "t":
				sig.timestamp = v
			case "v1":
				b, err := hex.DecodeString(v)
				if err != nil {
					return sig, &AuthError{"signature is not hex"}
				}
				sig.macs = append(sig.macs, b)
			}
		}
		if len(sig.macs) == 0 {
			return sig, &AuthError{"no v1 signature in " + h.Header}
		}
	default: // jobgate
		hexSig, ok := strings.CutPrefix(raw, "v1=")
		if !ok {
			return sig, &AuthError{fmt.Sprintf("signature header %s must start with \"v1=\"", h.Header)}
		}
		b, err := hex.DecodeString(hexSig)
		if err != nil {
			return sig, &AuthError{"signature is not hex"}
		}
		sig.macs = [][]byte{b}
		sig.timestamp = r.Header.Get(h.TimestampHeader)
	}
	if err := checkTimestamp(sig.timestamp, h.ToleranceS, now); err != nil {
		return sig, err
	}
	return sig, nil
}

// checkTimestamp accepts Unix seconds within tolerance of now, either
// way, compared without arithmetic on the sender's number (a far-future
// value must not overflow into the window).
func checkTimestamp(ts string, toleranceS int, now time.Time) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &AuthError{"missing or bad signature timestamp"}
	}
	lo, hi := now.Unix()-int64(toleranceS), now.Unix()+int64(toleranceS)
	if sec < lo || sec > hi {
		return &AuthError{fmt.Sprintf("timestamp outside the %d s replay window", toleranceS)}
	}
	return nil
}

// signedBytes is what a scheme's MAC covers. id is the trigger's dedupe
// header's value: Standard Webhooks signs it; the jobgate scheme signs it
// when the trigger has a dedupe header (so a replay under a new id does
// not authenticate), GitHub and Stripe leave it unsigned.
func signedBytes(scheme, ts, id string, r *http.Request, body []byte) []byte {
	switch scheme {
	case config.SchemeGitHub:
		return body
	case config.SchemeStripe:
		return append([]byte(ts+"."), body...)
	case config.SchemeStandard:
		return append([]byte(id+"."+ts+"."), body...)
	}
	return jobgateSigned(ts, r.Method, r.URL.EscapedPath(), r.URL.RawQuery, id, body)
}

// jobgateSigned is the jobgate scheme's signed text: "v1\n<ts>\n<METHOD>\n
// <path>\n<query>\n" (+ "<id>\n" with a dedupe header) + body.
func jobgateSigned(ts, method, path, query, id string, body []byte) []byte {
	head := "v1\n" + ts + "\n" + method + "\n" + path + "\n" + query + "\n"
	if id != "" {
		head += id + "\n"
	}
	return append([]byte(head), body...)
}

func mac(secret string, b []byte) []byte { return macKey([]byte(secret), b) }

func macKey(key, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(nil)
}

// standardKey is a Standard Webhooks secret's key: the base64 after
// "whsec_" (a secret without the prefix is taken as base64 too).
func standardKey(secret string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("a standard scheme secret is whsec_<base64>")
	}
	return b, nil
}

// SignStandard returns Standard Webhooks' webhook-signature value for a
// message id, Unix-seconds timestamp and body.
func SignStandard(secret, id string, ts int64, body []byte) (string, error) {
	key, err := standardKey(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(macKey(key, append([]byte(id+"."+strconv.FormatInt(ts, 10)+"."), body...))), nil
}

// SignJobgateID is SignJobgate for a trigger with a dedupe header: the
// header's value id is signed too.
func SignJobgateID(secret, method, pathQuery, id string, ts int64, body []byte) string {
	path, query, _ := strings.Cut(pathQuery, "?")
	return "v1=" + hex.EncodeToString(mac(secret, jobgateSigned(strconv.FormatInt(ts, 10), method, path, query, id, body)))
}

// SignJobgate returns the X-Jobgate-Signature value for a request (what a
// sender computes; docs/SECURITY.md). pathQuery is the request target
// ("/hooks/x?a=b"), ts Unix seconds.
func SignJobgate(secret, method, pathQuery string, ts int64, body []byte) string {
	path, query, _ := strings.Cut(pathQuery, "?")
	head := "v1\n" + strconv.FormatInt(ts, 10) + "\n" + method + "\n" + path + "\n" + query + "\n"
	return "v1=" + hex.EncodeToString(mac(secret, append([]byte(head), body...)))
}

// SignGitHub returns GitHub's X-Hub-Signature-256 value for body.
func SignGitHub(secret string, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(secret, body))
}

// SignStripe returns a Stripe-Signature value for body at ts.
func SignStripe(secret string, ts int64, body []byte) string {
	t := strconv.FormatInt(ts, 10)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac(secret, append([]byte(t+"."), body...)))
}
