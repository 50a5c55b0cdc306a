package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/triggers/httptrigger"
)

// Destinations (Lambda's on-success/on-failure): when an invocation
// reaches its final status, each target of its function's list gets one
// delivery task, queued by the worker that recorded the status (its task
// ID makes a repeat after a crash the same task). A delivery builds the
// Result, sends it, and records its state in the invocation's record;
// failed, it is retried with backoff and, out of retries, dead-lettered.

// Result is what a destination receives (schemas/destination-result.schema.json).
type Result struct {
	RequestId     string
	FunctionName  string
	Condition     string // Success or Failure
	Status        record.Status
	StatusCode    int
	ExitCode      *int `json:",omitempty"`
	Message       string
	Attempt       int
	StartTime     string `json:",omitempty"`
	EndTime       string
	DurationMs    int64
	MemUsageBytes int64
	// Event is the invocation's event, when at most MaxResultEvent bytes;
	// a larger one is left out for EventRef, the API path that returns
	// it (EventBytes says its size).
	Event      json.RawMessage `json:",omitempty"`
	EventRef   string          `json:",omitempty"`
	EventBytes int
	// LogTail is the end of its log: the last lines, at most
	// MaxResultLog bytes of them.
	LogTail []string
}

// Bounds of a Result, so that it fits any target (a function's event
// included).
const (
	MaxResultEvent = 64 << 10
	MaxResultLog   = 4 << 10
)

// destinationRetryDelay is a failed delivery's wait: 1 s, doubling, at
// most 5 minutes.
func destinationRetryDelay(n int) time.Duration {
	return min(time.Second<<min(n, 9), 5*time.Minute)
}

// queueDestinations queues the deliveries of an invocation's final status
// (FINISHED: on_success; FAILED: on_failure; ABORTED: none).
func (w *Worker) queueDestinations(ctx context.Context, id, fnName string, attempt int, status record.Status) error {
	fn := w.config().Function(fnName)
	if fn == nil || (status != record.Finished && status != record.Failed) {
		return nil
	}
	success := status == record.Finished
	targets := fn.Destinations(success)
	if len(targets) == 0 {
		return nil
	}
	rec, err := w.records.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("destinations of %s: %w", id, err)
	}
	for i, t := range targets {
		// Shown queued unless a delivery already wrote its state (a
		// repeat after a crash).
		if i >= len(rec.Destinations) {
			if err := w.records.SetDestination(ctx, id, i, record.DestinationStatus{Target: t.Target(), Status: record.DestinationQueued}); err != nil {
				return err
			}
		}
		d := queue.Destination{RequestId: id, Function: fnName, Attempt: attempt, Success: success, Index: i}
		if err := w.submit.QueueDestination(ctx, d, t.Retries()); err != nil {
			return err
		}
	}
	return nil
}

// deliverer is the asynq handler of destination tasks.
type deliverer struct{ w *Worker }

// ProcessTask delivers one final status to one destination.
func (h deliverer) ProcessTask(ctx context.Context, t *asynq.Task) error {
	w := h.w
	d, err := queue.DecodeDestination(t)
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := w.log.With().Str("request_id", d.RequestId).Str("function", d.Function).Str("delivery", d.ID()).Logger()
	fn := w.config().Function(d.Function)
	if fn == nil || d.Index >= len(fn.Destinations(d.Success)) {
		log.Warn().Msg("destination no longer configured; delivery dropped")
		return nil
	}
	target := fn.Destinations(d.Success)[d.Index]
	rec, err := w.records.Get(ctx, d.RequestId)
	if errors.Is(err, record.ErrNotFound) {
		log.Warn().Msg("invocation past its retention; delivery dropped")
		return nil
	}
	if err != nil {
		return err
	}
	body, err := w.result(ctx, rec, d)
	if err != nil {
		return err
	}
	tried, _ := asynq.GetRetryCount(ctx)
	most, _ := asynq.GetMaxRetry(ctx)
	sendErr := w.send(ctx, target, d, body, parseTime(rec.EndTime))
	state := record.DestinationStatus{Target: target.Target(), Status: record.DestinationDelivered, Attempts: tried + 1}
	last := tried >= most
	switch {
	case sendErr == nil:
		log.Info().Str("target", target.Target()).Int("attempts", tried+1).Msg("destination delivered")
	case last:
		state.Status, state.Error = record.DestinationFailed, sendErr.Error()
		if err := w.destinationDLQ.Add(ctx, deadletter.Entry{
			RequestId: d.ID(), ErrorCode: record.CodeInternalError, ErrorMessage: "destination " + target.Target() + ": " + sendErr.Error(),
			Attempt: tried + 1, Body: deadletter.Body{FunctionName: d.Function, Namespace: rec.Namespace, Qualifier: rec.Qualifier,
				RequestSource: "Destination", ClientContext: string(body), PushTime: rec.EndTime, RetryNum: tried},
		}); err != nil {
			return err // asynq tries again: the dead letter must be written
		}
		log.Error().Err(sendErr).Str("target", target.Target()).Int("attempts", tried+1).Msg("destination failed; dead-lettered")
	default:
		state.Status, state.Error = record.DestinationQueued, sendErr.Error()
		log.Warn().Err(sendErr).Str("target", target.Target()).Int("attempts", tried+1).Msg("destination failed; will retry")
	}
	if err := w.records.SetDestination(ctx, d.RequestId, d.Index, state); err != nil && !errors.Is(err, record.ErrNotFound) {
		log.Warn().Err(err).Msg("record the destination's state")
	}
	if sendErr != nil && !last {
		return sendErr
	}
	return nil
}

// result builds the Result of an invocation for delivery d.
func (w *Worker) result(ctx context.Context, rec *record.Record, d queue.Destination) ([]byte, error) {
	r := Result{
		RequestId: rec.RequestId, FunctionName: rec.FunctionName, Condition: "Failure", Status: rec.Status,
		StatusCode: rec.StatusCode, ExitCode: rec.ExitCode, Message: rec.Message, Attempt: rec.Attempt,
		StartTime: rec.StartTime, EndTime: rec.EndTime, DurationMs: rec.DurationMs, MemUsageBytes: rec.MemUsageBytes,
		LogTail: []string{},
	}
	if d.Success {
		r.Condition = "Success"
	}
	event, err := w.records.Event(ctx, rec.RequestId)
	if err != nil && !errors.Is(err, record.ErrNotFound) {
		return nil, err
	}
	if r.EventBytes = len(event); len(event) <= MaxResultEvent && json.Valid(event) {
		r.Event = event
	} else {
		r.EventRef = "/v1/invocations/" + rec.RequestId + "/event"
	}
	lines, _, err := w.logs.Lines(ctx, record.InstanceID(rec.RequestId, d.Attempt))
	if err != nil {
		return nil, err
	}
	size := 0
	for i := len(lines) - 1; i >= 0; i-- {
		if size += len(lines[i].Line); size > MaxResultLog {
			break
		}
		r.LogTail = append([]string{lines[i].Stream + " " + lines[i].Line}, r.LogTail...)
	}
	return json.Marshal(r)
}

// send delivers body to target: a function gets it as the event of an
// invocation whose RequestId derives from the delivery (so a repeat is
// the same invocation); a URL gets a POST, signed when it has a secret;
// a queue gets a message. With format: cloudevents it goes as a
// CloudEvent (asCloudEvent).
func (w *Worker) send(ctx context.Context, target config.Destination, d queue.Destination, body []byte, end time.Time) error {
	asCE := target.Format == "cloudevents"
	if target.URL == "" {
		msg := body
		if asCE {
			var err error
			if msg, err = asCloudEvent(ctx, target, d, body, end, nil); err != nil {
				return err
			}
		}
		if target.Function == "" {
			return w.publish(ctx, target, d.ID(), msg)
		}
		_, err := w.submit.Submit(ctx, submit.Request{Function: target.Function, Event: msg, Source: "Destination",
			RequestID: submit.DeriveRequestID("destination", d.ID())})
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if asCE {
		// Binary mode: ce-* headers, the result as the body.
		if _, err := asCloudEvent(ctx, target, d, body, end, req); err != nil {
			return err
		}
	}
	req.Header.Set("User-Agent", "jobgate-destination")
	req.Header.Set("X-Jobgate-Delivery", d.ID())
	if target.SecretEnv != "" {
		u, _ := url.Parse(target.URL)
		ts := w.now().Unix()
		req.Header.Set("X-Jobgate-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("X-Jobgate-Signature", httptrigger.SignJobgate(os.Getenv(target.SecretEnv), http.MethodPost, u.RequestURI(), ts, body))
	}
	resp, err := w.destinationClient.Do(req)
	if err != nil {
		// Not the URL (credentials, secret paths): the redacted target.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s: %w", target.Target(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch {
	case resp.StatusCode/100 == 3:
		return fmt.Errorf("%s answered %d (redirects are not followed)", target.Target(), resp.StatusCode)
	case resp.StatusCode/100 != 2:
		// The answer's body never comes back into a record: it may be an
		// internal server's page.
		return fmt.Errorf("%s answered %d", target.Target(), resp.StatusCode)
	}
	return nil
}
