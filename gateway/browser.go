package gateway

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Guards against a browser as the attacker (docs/SECURITY.md): a web page
// the operator opens can send requests to the loopback API (cross-site
// requests) and, by rebinding its own name to 127.0.0.1, read the answers
// (DNS rebinding). kubectl proxy's --accept-hosts is the anchor.

// guardedPath is what the Host and cross-site checks cover: the API, the
// console, asynqmon and /metrics. Trigger paths are webhooks from other
// hosts (their own auth), /healthz and /readyz are probes.
func guardedPath(p string) bool {
	for _, pre := range []string{"/v1/", "/ui/", "/asynqmon/"} {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	return p == "/metrics" || p == "/v1" || p == "/ui"
}

// allowedHosts is gateway.allowed_hosts, else the listen address's host
// and the loopback names. "*" allows any.
func allowedHosts(configured []string, listen string) map[string]bool {
	out := map[string]bool{}
	if len(configured) > 0 {
		for _, h := range configured {
			out[normalHost(h)] = true
		}
		return out
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		out[h] = true
	}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		out[normalHost(h)] = true
	}
	return out
}

// normalHost is a Host header's host: lower-case, without port or IPv6
// brackets.
func normalHost(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
}

// hostAllowed reports whether r's Host is one this gateway answers to.
func hostAllowed(allowed map[string]bool, r *http.Request) bool {
	return allowed["*"] || allowed[normalHost(r.Host)]
}

// crossSite reports a browser request from another site: an Origin that
// is not this gateway's own (or "null"), or Sec-Fetch-Site: cross-site.
func crossSite(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false // not a browser's cross-origin request
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null" (sandboxed pages, file:) and garbage
	}
	return !strings.EqualFold(u.Host, r.Host)
}

// stateChanging are the methods a guarded route changes state with.
func stateChanging(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// jsonContent reports whether a Content-Type names a JSON event: none
// (programmatic clients; a browser's cross-site request always sends
// Origin), application/json or application/cloudevents+json. The types a
// browser may send cross-site without asking (text/plain, forms) are not.
func jsonContent(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || mt == "application/cloudevents+json")
}
