package gateway

import (
	"encoding/json"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/jobgate/jobgate/internal/cloudevent"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/triggers/httptrigger"
)

var pathParam = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// MountHTTPTriggers serves the configured webhook paths besides the API.
func (g *Gateway) MountHTTPTriggers(trs []httptrigger.Trigger) {
	g.mux.Store(g.buildMux(trs))
	for _, tr := range trs {
		g.log.Info().Str("function", tr.Function).Str("trigger", tr.Name).Strs("methods", tr.Opts.Methods).Str("path", tr.Opts.Path).Msg("HTTP trigger mounted")
	}
}

// httpTrigger is one webhook's endpoint: authenticate, normalize into
// SCF's API Gateway event, submit.
func (g *Gateway) httpTrigger(tr httptrigger.Trigger) endpoint {
	names := pathParam.FindAllStringSubmatch(tr.Opts.Path, -1)
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		wait := r.URL.Query().Get("wait")
		if wait == "" {
			wait = "none"
		}
		refuse := func(err error) (any, error) {
			g.log.Warn().Str("function", tr.Function).Str("trigger", tr.Name).Str("reason", err.Error()).Str("remote", r.RemoteAddr).Msg("HTTP trigger refused")
			w.Header().Set("WWW-Authenticate", `Bearer realm="jobgate"`)
			return nil, &apiError{status: http.StatusUnauthorized, code: codeAuthFailure, msg: err.Error()}
		}
		// Everything that needs no body first: an unauthenticated sender
		// never gets the body read (only Content-Length is checked).
		if err := tr.Precheck(r, time.Now()); err != nil {
			return refuse(err)
		}
		// Never read past what could fit in the event.
		body, err := readBody(w, r, g.config().Function(tr.Function))
		if err != nil {
			return nil, err
		}
		if err := tr.Verify(r, body, time.Now()); err != nil {
			return refuse(err)
		}
		id, fingerprint := uuid.NewString(), ""
		if h := tr.Opts.DedupeHeader; h != "" {
			if key := r.Header.Get(h); key != "" {
				id = submit.DeriveRequestID("http", tr.Function, tr.Name, key)
				fingerprint = submit.Fingerprint([]byte(r.Method), []byte(r.URL.RequestURI()), body)
			}
		}
		// A CloudEvent keeps SCF's API Gateway shape, its attributes
		// added as "ce"; its id + source dedupe it unless the trigger
		// names a dedupe header that the request carries.
		ce, err := cloudevent.Parse(r.Context(), r.Header, body)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		if ce != nil && fingerprint == "" {
			id = submit.DeriveRequestID("cloudevents", tr.Function, tr.Name, ce.Source, ce.ID)
			fingerprint = submit.Fingerprint([]byte(r.Method), []byte(r.URL.RequestURI()), body)
		}
		params := map[string]string{}
		for _, m := range names {
			params[m[1]] = r.PathValue(m[1])
		}
		normalized := tr.Normalize(r, body, params, id)
		if ce != nil {
			normalized.CE = ce.Attributes
		}
		event, err := json.Marshal(normalized)
		if err != nil {
			return nil, &apiError{status: http.StatusInternalServerError, code: codeInternalError, msg: "the event could not be encoded", requestID: id, cause: err}
		}
		return g.submitAndAnswer(r, submit.Request{
			Function: tr.Function, Event: event, RequestID: id, Source: httptrigger.Source, TriggerName: tr.Name, Fingerprint: fingerprint,
		}, wait, true)
	}
}
