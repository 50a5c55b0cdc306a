package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jobgate/jobgate/internal/cloudevent"
	"github.com/jobgate/jobgate/internal/jsonobj"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
)

// invoke handles POST /v1/functions/{name}/invoke.
func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	if g.config().Function(name) == nil {
		return nil, notFound(codeFunctionNotFound, "function %q is not configured", name)
	}
	if err := requireJSON(r); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	wait := q.Get("wait")
	if wait != "" && wait != "scheduled" && wait != "none" {
		return nil, badRequest("wait must be scheduled or none")
	}
	at, err := delayedUntil(q, time.Now())
	if err != nil {
		return nil, err
	}
	if !at.IsZero() {
		if wait == "scheduled" {
			return nil, badRequest("a delayed invocation is answered once queued: wait must be none")
		}
		wait = "none"
	}
	event, err := readEvent(w, r, g.config().Function(name))
	if err != nil {
		return nil, err
	}
	req := submit.Request{Function: name, Event: event, Source: "API", At: at}
	// A CloudEvent (binary or structured mode): the job gets its data
	// object with the attributes as "ce", and its id + source dedupe it.
	ce, err := cloudevent.Parse(r.Context(), r.Header, event)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if ce != nil {
		if req.Event, err = ce.ObjectEvent(); err != nil {
			return nil, badRequest("%v", err)
		}
		req.RequestID = submit.DeriveRequestID("cloudevents", name, ce.Source, ce.ID)
		req.Fingerprint = submit.Fingerprint(req.Event)
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		req.RequestID = submit.DeriveRequestID("idempotency-key", name, key)
		req.Fingerprint = submit.Fingerprint(req.Event)
	}
	return g.submitAndAnswer(r, req, wait, false)
}

// delayedUntil reads ?delay_s=N (seconds from now) or ?at=RFC3339: when
// the invocation is due; zero when neither is given.
func delayedUntil(q url.Values, now time.Time) (time.Time, error) {
	ds, at := q.Get("delay_s"), q.Get("at")
	switch {
	case ds != "" && at != "":
		return time.Time{}, badRequest("give delay_s or at, not both")
	case ds != "":
		n, err := strconv.ParseFloat(ds, 64)
		if err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
			return time.Time{}, badRequest("delay_s must be a number of seconds ≥ 0")
		}
		n = min(n, 1e9) // ~31 years: refused as too far ahead, without overflowing a Duration
		return now.Add(time.Duration(n * float64(time.Second))), nil
	case at != "":
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return time.Time{}, badRequest("at must be an RFC 3339 time, e.g. 2026-11-29T08:00:00Z")
		}
		return t, nil
	}
	return time.Time{}, nil
}

// submitAndAnswer submits req and answers per wait: "none" → 202 once
// durably queued; "scheduled" (or "") → once started (200), or the
// scheduling error. brief answers 202 with {"RequestId"} only (HTTP
// triggers) instead of the record.
func (g *Gateway) submitAndAnswer(r *http.Request, req submit.Request, wait string, brief bool) (any, error) {
	res, err := g.d.Submitter.Submit(r.Context(), req)
	if err != nil {
		return nil, submitError(err, req.RequestID)
	}
	rec := res.Record
	g.log.Debug().Str("request_id", rec.RequestId).Str("function", req.Function).Bool("duplicate", res.Duplicate).
		Int("event_bytes", len(req.Event)).Str("source", req.Source).Str("trigger", req.TriggerName).Msg("invocation queued")
	if wait == "none" {
		if brief {
			return answer{http.StatusAccepted, map[string]string{"RequestId": rec.RequestId}}, nil
		}
		return answer{http.StatusAccepted, rec}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(g.config().Gateway.WaitTimeoutS)*time.Second)
	defer cancel()
	got, err := g.d.Watcher.Wait(ctx, rec.RequestId, func(r *record.Record) bool { return r.Status.Started() })
	if got == nil {
		got = rec
	}
	if brief {
		// A webhook sender learns its RequestId and where it stands, not
		// the record (node, image digest, messages are the operator's).
		view := briefRecord{RequestId: got.RequestId, Status: string(got.Status), StatusCode: got.StatusCode}
		switch {
		case err != nil && ctx.Err() != nil, err != nil:
			return answer{http.StatusAccepted, briefRecord{RequestId: rec.RequestId, Status: string(rec.Status)}}, nil
		case got.Status.Terminal() && got.StartTime == "":
			return nil, &apiError{status: schedulingErrorStatus(got.StatusCode), code: record.CodeName(got.StatusCode),
				msg: "the invocation failed before its process started", requestID: got.RequestId}
		}
		return view, nil
	}
	switch {
	case err != nil && ctx.Err() != nil:
		// Not scheduled in time, but durably queued: say so, don't fail.
		return answer{http.StatusAccepted, got}, nil
	case err != nil:
		return nil, &apiError{status: http.StatusServiceUnavailable, code: codeQueueUnavailable,
			msg:       fmt.Sprintf("queued as %s, but its progress cannot be followed; ask GET /v1/invocations/%s", rec.RequestId, rec.RequestId),
			requestID: rec.RequestId, cause: err}
	case got.Status.Terminal() && got.StartTime == "":
		// Failed before its process started: the scheduling error.
		return nil, &apiError{status: schedulingErrorStatus(got.StatusCode), code: record.CodeName(got.StatusCode), msg: got.Message, requestID: got.RequestId, record: got}
	}
	return got, nil
}

// briefRecord is what an HTTP trigger's sender is told.
type briefRecord struct {
	RequestId  string
	Status     string `json:",omitempty"`
	StatusCode int    `json:",omitempty"`
}

// submitError is the answer to a failed Submit: the event is not queued.
func submitError(err error, requestID string) error {
	ae := asAPIError(err)
	if ae.status >= 500 {
		ae = queueDown(err)
	}
	ae.requestID = requestID
	return ae
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

// batchAnswer is invoke-batch's 202 body.
type batchAnswer struct {
	RequestIds []string
	// Duplicates counts events already queued by an earlier request
	// with the same Idempotency-Key (a replay queues nothing).
	Duplicates int `json:",omitempty"`
}

// invokeBatch queues a JSON array of events for one function, all or
// nothing: 202 {"RequestIds":[…]} in the events' order once every one is
// durably queued; a bad event is a 4xx naming its index, and nothing of
// the batch is queued. Only ?wait=none (the default here): a batch
// producer does not wait for starts.
func (g *Gateway) invokeBatch(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	if g.config().Function(name) == nil {
		return nil, notFound(codeFunctionNotFound, "function %q is not configured", name)
	}
	if wait := r.URL.Query().Get("wait"); wait != "" && wait != "none" {
		return nil, badRequest("invoke-batch answers once queued: wait must be none")
	}
	if err := requireJSON(r); err != nil {
		return nil, err
	}
	limit := submit.MaxBatchBytes + 64<<10
	body, err := readAll(http.MaxBytesReader(w, r.Body, int64(limit)), r.ContentLength, limit)
	var big *http.MaxBytesError
	if errors.As(err, &big) {
		return nil, tooLarge(fmt.Sprintf("a batch's body is over %d bytes", submit.MaxBatchBytes))
	}
	if errors.Is(err, errInflightFull) {
		return nil, busy(w)
	}
	if err != nil {
		return nil, badRequest("read body: %v", err)
	}
	events, err := jsonobj.Objects(body)
	if ie := (*jsonobj.IndexError)(nil); errors.As(err, &ie) {
		return nil, asAPIError(&submit.BatchError{Index: ie.Index, Err: badRequest("event must be a JSON object")})
	}
	if err != nil {
		return nil, badRequest("the body must be a JSON array of event objects: %v", err)
	}
	req := submit.BatchRequest{Function: name, Events: events, Source: "API"}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		req.Key, req.Fingerprint = key, submit.Fingerprint(body)
	}
	res, err := g.d.Submitter.SubmitBatch(r.Context(), req)
	if err != nil {
		return nil, submitError(err, "")
	}
	out := batchAnswer{RequestIds: make([]string, len(res))}
	for i, rr := range res {
		out.RequestIds[i] = rr.Record.RequestId
		if rr.Duplicate {
			out.Duplicates++
		}
	}
	g.log.Debug().Str("function", name).Int("events", len(res)).Int("duplicates", out.Duplicates).Msg("batch queued")
	return answer{http.StatusAccepted, out}, nil
}

// requireJSON refuses an event body of a type a browser may send to
// another site without asking (text/plain, forms): 415.
func requireJSON(r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); !jsonContent(ct) {
		return &apiError{status: http.StatusUnsupportedMediaType, code: codeUnsupportedMedia,
			msg: fmt.Sprintf("an event is sent as application/json or application/cloudevents+json, not %q", ct)}
	}
	return nil
}
