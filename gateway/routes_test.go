package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/triggers/httptrigger"
)

func newTestGateway(t *testing.T) *Gateway {
	t.Helper()
	cfg := &config.Config{Worker: config.Worker{Node: "n"}, Functions: []config.Function{{Name: "fn", Image: "r/fn:1",
		Triggers: []config.Trigger{{Type: config.TriggerHTTP, Name: "h", Options: map[string]any{"path": "/hooks/{who}", "methods": []any{"POST"}}}}}}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	g := New(Deps{Config: cfg, Logger: zerolog.Nop()})
	trs, err := httptrigger.Triggers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.MountHTTPTriggers(trs)
	return g
}

// The gateway registers exactly the patterns config validates trigger
// paths against.
func TestRoutesAreTheConfigsAPIPatterns(t *testing.T) {
	t.Parallel()
	var got []string
	for p := range newTestGateway(t).routes() {
		got = append(got, p)
	}
	want := append([]string(nil), config.APIPatterns...)
	sort.Strings(got)
	sort.Strings(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("gateway routes vs config.APIPatterns (-want +got)\n%s", d)
	}
}

// What no route takes — an unknown path, a trigger path with the wrong
// method — gets the JSON error shape, not ServeMux's text/plain.
func TestUnroutedRequestsGetJSONErrors(t *testing.T) {
	t.Parallel()
	g := newTestGateway(t)
	cases := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/nope", 404, codeNotFound, ""},
		{"GET", "/hooks/alice", 405, codeMethodNotAllowed, "POST"},
		{"DELETE", "/healthz", 405, codeMethodNotAllowed, "GET, HEAD"},
		{"GET", "/v1/nothing", 404, codeNotFound, ""},
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(c.method, c.path, nil)
		r.Host = "127.0.0.1:9100" // the open API answers to its own names only
		g.ServeHTTP(w, r)
		var body errorBody
		err := json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != c.status || err != nil || body.Error.Code != c.code || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q %s: want %d %s as JSON", c.method, c.path, w.Code, w.Header().Get("Content-Type"), w.Body, c.status, c.code)
		}
		if c.allow != "" && w.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, w.Header().Get("Allow"), c.allow)
		}
	}
	// A routed request still gets its path values.
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("healthz: %d", w.Code)
	}
}

// An id that names another key of a record (its event) is not found, and
// a store failure's text never reaches the client.
func TestNoStoreTextInAnswers(t *testing.T) {
	t.Parallel()
	g := newTestGateway(t)
	w := httptest.NewRecorder()
	if _, err := g.lookup(t.Context(), "0b3c:event"); asAPIError(err).status != http.StatusNotFound {
		t.Fatalf("id with a colon: %v", err)
	}
	g.writeError(w, httptest.NewRequest("GET", "/v1/invocations/x", nil), errors.New("WRONGTYPE Operation against a key holding the wrong kind of value"), "x")
	if w.Code != http.StatusServiceUnavailable || strings.Contains(w.Body.String(), "WRONGTYPE") {
		t.Fatalf("store error answered %d %s", w.Code, w.Body)
	}
	g.AddReadyChecks(Check{Name: "redis", Fn: func(context.Context) error { return errors.New("dial tcp 10.1.2.3:6379: connection refused") }})
	w = httptest.NewRecorder()
	g.readyz(w, httptest.NewRequest("GET", "/readyz", nil))
	if w.Code != http.StatusServiceUnavailable || strings.Contains(w.Body.String(), "10.1.2.3") || !strings.Contains(w.Body.String(), `"redis":"unavailable"`) {
		t.Fatalf("readyz answered %d %s", w.Code, w.Body)
	}
}
