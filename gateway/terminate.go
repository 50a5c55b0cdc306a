package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jobgate/jobgate/internal/control"
	"github.com/jobgate/jobgate/internal/record"
)

// terminate handles POST /v1/invocations/{id}/terminate
// {"GraceShutdown":bool}: a pending or scheduling invocation is cancelled
// (never started); a running one is stopped by the worker that runs it,
// wherever it is. Either way it ends ABORTED/499.
func (g *Gateway) terminate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var body struct{ GraceShutdown bool }
	if b, _ := io.ReadAll(io.LimitReader(r.Body, 4096)); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			writeError(w, http.StatusBadRequest, "InvalidParameterValue", "body must be {\"GraceShutdown\": bool}", id)
			return
		}
	}
	ctx := r.Context()
	rec, err := g.d.Records.Get(ctx, id)
	if errors.Is(err, record.ErrNotFound) {
		writeError(w, http.StatusNotFound, "InvocationNotFound", fmt.Sprintf("no invocation %s", id), id)
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		return
	}
	if rec.Status.Terminal() {
		writeErrorWith(w, http.StatusConflict, "InvocationEnded", fmt.Sprintf("invocation %s already ended: %s", id, rec.Status), id, rec)
		return
	}
	mode := control.Kill
	if body.GraceShutdown {
		mode = control.Grace
	}
	// The key first: a worker between its last check and Start finds it.
	prefix := g.d.Config.Redis.Prefix
	if err := g.d.Redis.Set(ctx, control.TerminateKey(prefix, id), mode, g.d.Config.Retention()).Err(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		return
	}
	now := time.Now()
	msg := "terminated by user before it started"
	err = g.d.Records.UpdateFrom(ctx, id, []record.Status{record.Pending, record.Scheduling}, record.Update{
		Status: record.Aborted, StatusCode: record.Ptr(record.CodeRequestCanceled), Message: &msg, EndTime: &now,
	})
	if err == nil {
		g.log.Info().Str("request_id", id).Msg("terminated before start")
		got, _ := g.d.Records.Get(ctx, id)
		writeJSON(w, http.StatusOK, got)
		return
	}
	if !errors.Is(err, record.ErrStatus) {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		return
	}
	// Running: tell the workers; the one that runs it stops it.
	if err := g.d.Redis.Publish(ctx, control.Channel(prefix), id).Err(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		return
	}
	g.log.Info().Str("request_id", id).Str("mode", mode).Msg("terminate requested")
	wait := 10 * time.Second
	if body.GraceShutdown {
		wait += g.d.Config.Worker.StopGrace()
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	got, err := g.d.Watcher.Wait(wctx, id, func(r *record.Record) bool { return r.Status.Terminal() })
	if err != nil || got == nil || !got.Status.Terminal() {
		// Requested and durable; the worker will act on it.
		writeJSON(w, http.StatusAccepted, got)
		return
	}
	writeJSON(w, http.StatusOK, got)
}
