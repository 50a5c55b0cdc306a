package config

import (
	"fmt"
	"net/http"
	"strings"
)

// reservedPaths belong to the API; HTTP triggers may not use them.
var reservedPaths = []string{"/v1/", "/healthz", "/readyz", "/metrics"}

// APIPatterns are the gateway's own http.ServeMux patterns (the gateway
// registers exactly these; a test holds it to that). A trigger path that
// conflicts with one of them would make the gateway's mux panic at
// start, so validate reports it instead.
var APIPatterns = []string{
	"POST /v1/functions/{name}/invoke",
	"POST /v1/functions/{name}/invoke-batch",
	"GET /v1/functions",
	"GET /v1/functions/{name}",
	"GET /v1/cluster",
	"GET /ui/",
	"/asynqmon/",
	"GET /v1/invocations",
	"GET /v1/invocations/{id}",
	"GET /v1/invocations/{id}/logs",
	"GET /v1/invocations/{id}/event",
	"POST /v1/invocations/{id}/terminate",
	"GET /v1/deadletters",
	"GET /v1/deadletters/{id}",
	"POST /v1/deadletters/{id}/redrive",
	"DELETE /v1/deadletters/{id}",
	"GET /healthz",
	"GET /readyz",
	"GET /metrics",
	"/v1/",
}

// routeSet finds HTTP trigger paths that collide with the API or with
// each other, using net/http's own pattern rules (the gateway serves
// triggers with http.ServeMux).
type routeSet struct {
	mux   *http.ServeMux
	owner map[string]string
}

func newRouteSet() *routeSet {
	r := &routeSet{mux: http.NewServeMux(), owner: map[string]string{}}
	for _, p := range APIPatterns {
		r.mux.Handle(p, http.NotFoundHandler())
		r.owner[p] = "the API"
	}
	return r
}

// Patterns returns the ServeMux patterns of an HTTP trigger.
func (o HTTPTrigger) Patterns() []string {
	var out []string
	for _, m := range o.Methods {
		if m == "ANY" {
			return []string{o.Path}
		}
		out = append(out, m+" "+o.Path)
	}
	return out
}

// add returns "" or why the trigger's path cannot be served.
func (r *routeSet) add(fn, trigger string, o HTTPTrigger) (msg string) {
	for _, p := range reservedPaths {
		if o.Path == strings.TrimSuffix(p, "/") || strings.HasPrefix(o.Path, p) || o.Path == p {
			return fmt.Sprintf("%q collides with the API's %s", o.Path, p)
		}
	}
	defer func() {
		if v := recover(); v != nil {
			msg = fmt.Sprintf("%q cannot be served: %v", o.Path, v)
		}
	}()
	for _, pat := range o.Patterns() {
		if prev, dup := r.owner[pat]; dup {
			return fmt.Sprintf("%q collides with %s", pat, prev)
		}
		r.mux.Handle(pat, http.NotFoundHandler())
		r.owner[pat] = fmt.Sprintf("function %s trigger %s", fn, trigger)
	}
	return ""
}

func envOf(b *BearerAuth) string {
	if b == nil {
		return ""
	}
	return b.TokenEnv
}

func envOfHMAC(h *HMACAuth) string {
	if h == nil {
		return ""
	}
	return h.SecretEnv
}
