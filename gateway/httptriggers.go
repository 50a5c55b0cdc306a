package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/triggers"
	"github.com/jobgate/jobgate/triggers/httptrigger"
)

var pathParam = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// MountHTTPTriggers serves the configured webhook paths (the config has
// checked they collide with nothing).
func (g *Gateway) MountHTTPTriggers(trs []httptrigger.Trigger) {
	for _, tr := range trs {
		h := g.httpTrigger(tr)
		for _, p := range tr.Opts.Patterns() {
			g.mux.Handle(p, h)
		}
		g.log.Info().Str("function", tr.Function).Str("trigger", tr.Name).Strs("methods", tr.Opts.Methods).Str("path", tr.Opts.Path).Msg("HTTP trigger mounted")
	}
}

func (g *Gateway) httpTrigger(tr httptrigger.Trigger) http.HandlerFunc {
	names := pathParam.FindAllStringSubmatch(tr.Opts.Path, -1)
	return func(w http.ResponseWriter, r *http.Request) {
		wait := r.URL.Query().Get("wait")
		if wait == "" {
			wait = "none"
		}
		// Never read past what could fit in the event.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(jobenv.MaxEventBytes)))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "EventTooLarge", fmt.Sprintf("body is over %d bytes, the largest event", jobenv.MaxEventBytes), "")
			return
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "InvalidParameterValue", "read body: "+err.Error(), "")
			return
		}
		if err := tr.Authenticate(r, body, time.Now()); err != nil {
			g.log.Warn().Str("function", tr.Function).Str("trigger", tr.Name).Str("reason", err.Error()).Str("remote", r.RemoteAddr).Msg("HTTP trigger refused")
			w.Header().Set("WWW-Authenticate", `Bearer realm="jobgate"`)
			writeError(w, http.StatusUnauthorized, "AuthFailure", err.Error(), "")
			return
		}
		id := uuid.NewString()
		for _, h := range []string{"Idempotency-Key", "X-Request-Id"} {
			if key := r.Header.Get(h); key != "" {
				id = submit.DeriveRequestID("http", tr.Function, tr.Name, key)
				break
			}
		}
		params := map[string]string{}
		for _, m := range names {
			params[m[1]] = r.PathValue(m[1])
		}
		event, err := json.Marshal(tr.Normalize(r, body, params, id))
		if err != nil {
			writeError(w, http.StatusInternalServerError, "InternalError", err.Error(), id)
			return
		}
		g.submitAndAnswer(w, r, submit.Request{
			Function: tr.Function, Event: event, RequestID: id, Source: triggers.SourceHTTP, TriggerName: tr.Name,
		}, wait, true)
	}
}
