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
	for k, vs := range r.Header {
		ev.Headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
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

// Authenticate checks the trigger's auth against the raw body.
func (t Trigger) Authenticate(r *http.Request, body []byte, now time.Time) error {
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
		if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			return &AuthError{"invalid bearer token"}
		}
		return nil
	case a.HMACSHA256 != nil:
		return checkHMAC(a.HMACSHA256, r, body, now)
	}
	return nil
}

func checkHMAC(h *config.HMACAuth, r *http.Request, body []byte, now time.Time) error {
	sig := r.Header.Get(h.Header)
	if sig == "" {
		return &AuthError{"missing signature header " + h.Header}
	}
	hexSig, ok := strings.CutPrefix(sig, h.Prefix)
	if !ok {
		return &AuthError{fmt.Sprintf("signature header %s must start with %q", h.Header, h.Prefix)}
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return &AuthError{"signature is not hex"}
	}
	mac := hmac.New(sha256.New, []byte(os.Getenv(h.SecretEnv)))
	if h.TimestampHeader != "" {
		ts := r.Header.Get(h.TimestampHeader)
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return &AuthError{"missing or bad timestamp header " + h.TimestampHeader}
		}
		if d := now.Sub(time.Unix(sec, 0)); d > time.Duration(h.ToleranceS)*time.Second || -d > time.Duration(h.ToleranceS)*time.Second {
			return &AuthError{fmt.Sprintf("timestamp outside the %d s replay window", h.ToleranceS)}
		}
		mac.Write([]byte(ts + "."))
	}
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return &AuthError{"signature mismatch"}
	}
	return nil
}

// Sign returns the header value a sender would send (for tests and docs).
func Sign(secret, prefix string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return prefix + hex.EncodeToString(mac.Sum(nil))
}
