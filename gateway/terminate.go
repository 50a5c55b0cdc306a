package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jobgate/jobgate/internal/record"
)

// terminate handles POST /v1/invocations/{id}/terminate
// {"GraceShutdown":bool}: a pending or scheduling invocation is cancelled
// (never started); a running one is stopped by the worker that runs it,
// wherever it is (internal/control). Either way it ends ABORTED/499.
func (g *Gateway) terminate(_ http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	var body struct{ GraceShutdown bool }
	if b, _ := io.ReadAll(io.LimitReader(r.Body, 4096)); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			return nil, badRequest(`body must be {"GraceShutdown": bool}`)
		}
	}
	ctx := r.Context()
	rec, err := g.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Status.Terminal() {
		return nil, conflict(codeInvocationEnded, fmt.Sprintf("invocation %s already ended: %s", id, rec.Status), rec)
	}
	// The request first: a worker between its last check and Start finds it.
	if err := g.control.Request(ctx, id, body.GraceShutdown); err != nil {
		return nil, err
	}
	now := time.Now()
	msg := "terminated by user before it started"
	err = g.d.Records.UpdateFrom(ctx, id, []record.Status{record.Scheduled, record.Pending, record.Scheduling}, record.Update{
		Status: record.Aborted, StatusCode: record.Ptr(record.CodeRequestCanceled), Message: &msg, EndTime: &now,
	})
	if err == nil {
		g.log.Info().Str("request_id", id).Msg("terminated before start")
		return g.lookup(ctx, id)
	}
	if !errors.Is(err, record.ErrStatus) {
		return nil, err
	}
	// Running: tell the workers; the one that runs it stops it.
	if err := g.control.Announce(ctx, id); err != nil {
		return nil, err
	}
	g.log.Info().Str("request_id", id).Bool("grace", body.GraceShutdown).Msg("terminate requested")
	wait := 10 * time.Second
	if body.GraceShutdown {
		wait += g.config().Worker.StopGrace()
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	got, err := g.d.Watcher.Wait(wctx, id, func(r *record.Record) bool { return r.Status.Terminal() })
	if err != nil || got == nil || !got.Status.Terminal() {
		// Requested and durable; the worker will act on it.
		return answer{http.StatusAccepted, got}, nil
	}
	return got, nil
}
