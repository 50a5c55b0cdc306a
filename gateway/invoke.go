package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
)

// invoke handles POST /v1/functions/{name}/invoke.
func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if g.d.Config.Function(name) == nil {
		writeError(w, http.StatusNotFound, "FunctionNotFound", fmt.Sprintf("function %q is not configured", name), "")
		return
	}
	wait := r.URL.Query().Get("wait")
	if wait != "" && wait != "scheduled" && wait != "none" {
		writeError(w, http.StatusBadRequest, "InvalidParameterValue", "wait must be scheduled or none", "")
		return
	}
	event, ok := readEvent(w, r)
	if !ok {
		return
	}
	req := submit.Request{Function: name, Event: event, Source: "API"}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		req.RequestID = submit.DeriveRequestID("idempotency-key", name, key)
	}
	g.submitAndAnswer(w, r, req, wait, false)
}

// submitAndAnswer submits req and answers per wait: "none" → 202 once
// durably queued; "scheduled" (or "") → once started (200), or the
// scheduling error. brief answers 202 with {"RequestId"} only (HTTP
// triggers) instead of the record.
func (g *Gateway) submitAndAnswer(w http.ResponseWriter, r *http.Request, req submit.Request, wait string, brief bool) {
	res, err := g.d.Submitter.Submit(r.Context(), req)
	if err != nil {
		g.submitError(w, err, req.RequestID)
		return
	}
	rec := res.Record
	log := g.log.With().Str("request_id", rec.RequestId).Str("function", req.Function).Logger()
	log.Info().Bool("duplicate", res.Duplicate).Int("event_bytes", len(req.Event)).Str("source", req.Source).Str("trigger", req.TriggerName).Msg("invocation queued")
	if wait == "none" {
		if brief {
			writeJSON(w, http.StatusAccepted, map[string]string{"RequestId": rec.RequestId})
			return
		}
		writeJSON(w, http.StatusAccepted, rec)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(g.d.Config.Gateway.WaitTimeoutS)*time.Second)
	defer cancel()
	got, err := g.d.Watcher.Wait(ctx, rec.RequestId, func(r *record.Record) bool { return r.Status.Started() })
	if got == nil {
		got = rec
	}
	switch {
	case err != nil && ctx.Err() != nil:
		// Not scheduled in time, but durably queued: say so, don't fail.
		writeJSON(w, http.StatusAccepted, got)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "QueueUnavailable", err.Error(), rec.RequestId)
	case got.Status.Terminal() && got.StartTime == "":
		// Failed before its process started: the scheduling error.
		writeErrorWith(w, schedulingErrorStatus(got.StatusCode), record.CodeName(got.StatusCode), got.Message, got.RequestId, got)
	default:
		writeJSON(w, http.StatusOK, got)
	}
}

// readEvent reads at most the largest event that fits, and requires a
// JSON object.
func readEvent(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(jobenv.MaxEventBytes)))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "EventTooLarge", fmt.Sprintf(
			"event is over %d bytes: SCF_CUSTOM_CONTAINER_EVENT=<event> must stay under Linux's 128 KiB per-string limit (131072 bytes including the NUL)",
			jobenv.MaxEventBytes), "")
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidParameterValue", "read body: "+err.Error(), "")
		return nil, false
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
		writeError(w, http.StatusBadRequest, "InvalidParameterValue", "event must be a JSON object", "")
		return nil, false
	}
	return body, true
}

func (g *Gateway) submitError(w http.ResponseWriter, err error, requestID string) {
	var lim *jobenv.LimitError
	switch {
	case errors.Is(err, submit.ErrUnknownFunction):
		writeError(w, http.StatusNotFound, "FunctionNotFound", err.Error(), requestID)
	case errors.As(err, &lim):
		writeError(w, http.StatusRequestEntityTooLarge, "EventTooLarge", err.Error(), requestID)
	default:
		g.log.Error().Err(err).Msg("submit failed: event not queued")
		writeError(w, http.StatusServiceUnavailable, "QueueUnavailable", "event not queued: "+err.Error(), requestID)
	}
}

// schedulingErrorStatus maps an SCF scheduling failure to an HTTP status.
func schedulingErrorStatus(code int) int {
	switch code {
	case record.CodePullImageFailed:
		return http.StatusBadGateway
	case record.CodePullImageTimeOut:
		return http.StatusGatewayTimeout
	case record.CodeContainerInitError:
		return http.StatusBadRequest
	case record.CodeEventTooLarge:
		return http.StatusRequestEntityTooLarge
	case record.CodeRequestCanceled:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}
