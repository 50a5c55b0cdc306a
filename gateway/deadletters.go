package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/record"
)

type deadLetterPage struct {
	DeadLetters []*deadletter.Entry
	NextCursor  string
}

func (g *Gateway) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "InvalidParameterValue", "limit must be 1..100", "")
			return
		}
		limit = n
	}
	es, next, err := g.d.DeadLetters.List(r.Context(), limit, r.URL.Query().Get("cursor"))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), "")
		return
	}
	writeJSON(w, http.StatusOK, deadLetterPage{DeadLetters: es, NextCursor: next})
}

func (g *Gateway) deadLetter(w http.ResponseWriter, r *http.Request) (*deadletter.Entry, bool) {
	id := r.PathValue("id")
	e, err := g.d.DeadLetters.Get(r.Context(), id)
	if errors.Is(err, deadletter.ErrNotFound) {
		writeError(w, http.StatusNotFound, "DeadLetterNotFound", fmt.Sprintf("no dead letter %s", id), id)
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		return nil, false
	}
	return e, true
}

func (g *Gateway) getDeadLetter(w http.ResponseWriter, r *http.Request) {
	if e, ok := g.deadLetter(w, r); ok {
		writeJSON(w, http.StatusOK, e)
	}
}

// redrive runs a dead-lettered event again and removes it from the list.
func (g *Gateway) redrive(w http.ResponseWriter, r *http.Request) {
	e, ok := g.deadLetter(w, r)
	if !ok {
		return
	}
	rec, err := g.d.Submitter.Redrive(r.Context(), e)
	switch {
	case errors.Is(err, record.ErrStatus):
		writeError(w, http.StatusConflict, "InvocationNotFailed", "the invocation is not FAILED (already redriven?)", e.RequestId)
		return
	case err != nil:
		g.submitError(w, err, e.RequestId)
		return
	}
	if err := g.d.DeadLetters.Delete(r.Context(), e.RequestId); err != nil && !errors.Is(err, deadletter.ErrNotFound) {
		g.log.Warn().Err(err).Str("request_id", e.RequestId).Msg("remove redriven dead letter")
	}
	g.log.Info().Str("request_id", e.RequestId).Str("new_request_id", rec.RequestId).Int("attempt", rec.Attempt).Msg("dead letter redriven")
	writeJSON(w, http.StatusAccepted, rec)
}

func (g *Gateway) deleteDeadLetter(w http.ResponseWriter, r *http.Request) {
	e, ok := g.deadLetter(w, r)
	if !ok {
		return
	}
	if err := g.d.DeadLetters.Delete(r.Context(), e.RequestId); err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), e.RequestId)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
