package gateway

import (
	"errors"
	"net/http"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/record"
)

type deadLetterPage struct {
	DeadLetters []*deadletter.Entry
	NextCursor  string
}

// listDeadLetters handles GET /v1/deadletters?limit=&cursor=.
func (g *Gateway) listDeadLetters(_ http.ResponseWriter, r *http.Request) (any, error) {
	limit, cursor, err := page(r)
	if err != nil {
		return nil, err
	}
	es, next, err := g.d.DeadLetters.List(r.Context(), limit, cursor)
	if err != nil {
		return nil, err
	}
	return deadLetterPage{DeadLetters: es, NextCursor: next}, nil
}

// getDeadLetter handles GET /v1/deadletters/{id}.
func (g *Gateway) getDeadLetter(_ http.ResponseWriter, r *http.Request) (any, error) {
	return g.d.DeadLetters.Get(r.Context(), r.PathValue("id"))
}

// redrive runs a dead-lettered event again and removes it from the list.
func (g *Gateway) redrive(_ http.ResponseWriter, r *http.Request) (any, error) {
	e, err := g.d.DeadLetters.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	rec, err := g.d.Submitter.Redrive(r.Context(), e)
	if errors.Is(err, record.ErrStatus) {
		return nil, conflict(codeInvocationNotFailed, "the invocation is not FAILED (already redriven?)", nil)
	}
	if err != nil {
		return nil, submitError(err, e.RequestId)
	}
	if err := g.d.DeadLetters.Delete(r.Context(), e.RequestId); err != nil && !errors.Is(err, deadletter.ErrNotFound) {
		g.log.Warn().Err(err).Str("request_id", e.RequestId).Msg("remove redriven dead letter")
	}
	g.log.Info().Str("request_id", e.RequestId).Str("new_request_id", rec.RequestId).Int("attempt", rec.Attempt).Msg("dead letter redriven")
	return answer{http.StatusAccepted, rec}, nil
}

// deleteDeadLetter handles DELETE /v1/deadletters/{id}.
func (g *Gateway) deleteDeadLetter(_ http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	if _, err := g.d.DeadLetters.Get(r.Context(), id); err != nil {
		return nil, err
	}
	if err := g.d.DeadLetters.Delete(r.Context(), id); err != nil {
		return nil, err
	}
	return answer{status: http.StatusNoContent}, nil
}
