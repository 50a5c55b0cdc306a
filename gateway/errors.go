package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
)

// API error codes (the Error.Code of every non-2xx answer). SCF's names
// where SCF has one.
const (
	codeInvalidParameter    = "InvalidParameterValue"
	codeNotFound            = "NotFound"
	codeMethodNotAllowed    = "MethodNotAllowed"
	codeFunctionNotFound    = "FunctionNotFound"
	codeInvocationNotFound  = "InvocationNotFound"
	codeDeadLetterNotFound  = "DeadLetterNotFound"
	codeInvocationEnded     = "InvocationEnded"
	codeInvocationNotFailed = "InvocationNotFailed"
	codeEventTooLarge       = "EventTooLarge"
	codeAuthFailure         = "AuthFailure"
	codeKeyReused           = "IdempotencyKeyReused"
	codeForbidden           = "Forbidden"
	codeRateLimited         = "TooManyRequests"
	codeStoreUnavailable    = "StoreUnavailable"
	codeQueueUnavailable    = "QueueUnavailable"
	codeInternalError       = "InternalError"
	codeHostNotAllowed      = "HostNotAllowed"
	codeCrossSite           = "CrossSiteRequest"
	codeUnsupportedMedia    = "UnsupportedMediaType"
	codeServerBusy          = "ServerBusy"
)

// apiError is an error that knows its answer: HTTP status, code, message,
// and optionally the record it is about. Handlers return one (or an
// error writeError maps, below); nothing else writes error bodies.
type apiError struct {
	status    int
	code      string
	msg       string
	requestID string
	record    any
	index     *int  // the batch event it is about
	cause     error // logged for 5xx, never sent
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *apiError) Unwrap() error { return e.cause }

func badRequest(format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidParameter, msg: fmt.Sprintf(format, a...)}
}

func notFound(code, format string, a ...any) *apiError {
	return &apiError{status: http.StatusNotFound, code: code, msg: fmt.Sprintf(format, a...)}
}

func conflict(code, msg string, rec any) *apiError {
	return &apiError{status: http.StatusConflict, code: code, msg: msg, record: rec}
}

func tooLarge(msg string) *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, code: codeEventTooLarge, msg: msg}
}

// storeDown is Redis trouble while reading or writing state.
func storeDown(err error) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: codeStoreUnavailable, msg: "the store is unavailable; try again", cause: err}
}

// queueDown is Redis trouble on the submit path: the event is not queued.
func queueDown(err error) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: codeQueueUnavailable, msg: "event not queued: the queue is unavailable; try again", cause: err}
}

// errorBody is the body of every error answer (docs/OPERATIONS.md, "HTTP API").
type errorBody struct {
	Error struct {
		Code    string
		Message string
	}
	RequestId  string
	Invocation any  `json:",omitempty"`
	EventIndex *int `json:",omitempty"` // invoke-batch: the event refused
}

// asAPIError maps any handler error to its answer: the stores' and the
// submitter's sentinel errors have fixed answers; anything else is the
// store being unavailable (the detail goes to the log, not the client).
func asAPIError(err error) *apiError {
	var ae *apiError
	var lim *jobenv.LimitError
	var be *submit.BatchError
	switch {
	case errors.As(err, &be): // before apiError: it may wrap one

		inner := asAPIError(be.Err)
		if inner.status >= 500 {
			return inner
		}
		at := *inner
		at.msg, at.index = fmt.Sprintf("event %d: %s", be.Index, inner.msg), &be.Index
		return &at
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, submit.ErrBadBatch), errors.Is(err, submit.ErrBadDelay):
		return badRequest("%v", err)
	case errors.Is(err, submit.ErrKeyReused):
		return &apiError{status: http.StatusConflict, code: codeKeyReused, msg: "this idempotency key was used for a different request"}
	case errors.Is(err, submit.ErrUnknownFunction):
		return &apiError{status: http.StatusNotFound, code: codeFunctionNotFound, msg: err.Error()}
	case errors.As(err, &lim):
		return tooLarge(err.Error())
	case errors.Is(err, record.ErrNotFound):
		return notFound(codeInvocationNotFound, "no invocation (unknown or past retention)")
	case errors.Is(err, deadletter.ErrNotFound):
		return notFound(codeDeadLetterNotFound, "no such dead letter")
	}
	return storeDown(err)
}

// writeError answers err; requestID is used when the error names none.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error, requestID string) {
	ae := asAPIError(err)
	if ae.requestID != "" {
		requestID = ae.requestID
	}
	if ae.status >= 500 {
		g.log.Error().Err(err).Str("request_id", requestID).Str("method", r.Method).Str("path", r.URL.Path).Msg("request failed")
	}
	var body errorBody
	body.Error.Code, body.Error.Message, body.RequestId, body.Invocation, body.EventIndex = ae.code, ae.msg, requestID, ae.record, ae.index
	writeJSON(w, ae.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// answer is a handler's non-200 success (202, 204).
type answer struct {
	status int
	body   any
}

// endpoint is an API handler: it returns the answer's body (200, or an
// answer for another status), or an error writeError maps. A handler that
// streams writes its own response and returns nil, nil.
type endpoint func(w http.ResponseWriter, r *http.Request) (any, error)

// serve turns an endpoint into an http.Handler: the one place answers
// and errors are written.
func (g *Gateway) serve(h endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h(w, r)
		switch {
		case err != nil:
			g.writeError(w, r, err, r.PathValue("id"))
		case v == nil:
		default:
			status := http.StatusOK
			if a, ok := v.(answer); ok {
				status, v = a.status, a.body
			}
			if status == http.StatusNoContent {
				w.WriteHeader(status)
				return
			}
			writeJSON(w, status, v)
		}
	}
}
