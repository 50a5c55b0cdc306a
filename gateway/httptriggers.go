package gateway

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"time"
	"unicode/utf8"

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
		// The body grows when it becomes a JSON string (a '<' is six
		// bytes): refuse what cannot fit before building it, not after
		// (a 6 MiB body of '<' made a 37.7 MiB event, and eight at once
		// peaked near 1 GiB).
		if n, max := jsonStringLen(body), g.config().Function(tr.Function).MaxEventBytes(); n > max {
			return nil, tooLarge(fmt.Sprintf("the body would make an event of at least %d bytes, over the function's %d", n, max))
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

// jsonStringLen is how long body becomes as the event's "body" string:
// encoding/json's escaping of valid UTF-8, or base64 for anything else
// (httptrigger.Normalize).
func jsonStringLen(body []byte) int {
	if !utf8.Valid(body) {
		return base64.StdEncoding.EncodedLen(len(body)) + 2
	}
	n := 2
	for i := 0; i < len(body); {
		c := body[i]
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
			n += 2
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			n += 6
		case c == 0xE2 && i+2 < len(body) && body[i+1] == 0x80 && (body[i+2] == 0xA8 || body[i+2] == 0xA9):
			n += 6 // U+2028, U+2029
			i += 3
			continue
		default:
			n++
		}
		i++
	}
	return n
}
