package gateway

import (
	"errors"
	"net/http"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/queue"
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
	store, err := g.deadLetterStore(r)
	if err != nil {
		return nil, err
	}
	es, next, err := store.List(r.Context(), limit, cursor)
	if err != nil {
		return nil, err
	}
	return deadLetterPage{DeadLetters: es, NextCursor: next}, nil
}

// getDeadLetter handles GET /v1/deadletters/{id}.
func (g *Gateway) getDeadLetter(_ http.ResponseWriter, r *http.Request) (any, error) {
	store, err := g.deadLetterStore(r)
	if err != nil {
		return nil, err
	}
	return store.Get(r.Context(), r.PathValue("id"))
}

// deadLetterStore is the list ?kind= names: the invocations' (default)
// or the destinations' failed deliveries (kind=destination).
func (g *Gateway) deadLetterStore(r *http.Request) (*deadletter.Store, error) {
	switch r.URL.Query().Get("kind") {
	case "", "invocation":
		return g.d.DeadLetters, nil
	case "destination":
		if g.d.DestinationDeadLetters != nil {
			return g.d.DestinationDeadLetters, nil
		}
	}
	return nil, badRequest("kind must be invocation or destination")
}

// redrive runs a dead-lettered event again and removes it from the list.
func (g *Gateway) redrive(_ http.ResponseWriter, r *http.Request) (any, error) {
	if r.URL.Query().Get("kind") == "destination" {
		return g.redriveDelivery(r)
	}
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
	store, err := g.deadLetterStore(r)
	if err != nil {
		return nil, err
	}
	if _, err := store.Get(r.Context(), id); err != nil {
		return nil, err
	}
	if err := store.Delete(r.Context(), id); err != nil {
		return nil, err
	}
	return answer{status: http.StatusNoContent}, nil
}

// redriveDelivery queues a dead-lettered delivery again, with its full
// retries, and removes the entry: its spent task is deleted first, so
// the delivery keeps its ID (a receiver deduplicating by it sees one).
func (g *Gateway) redriveDelivery(r *http.Request) (any, error) {
	ctx := r.Context()
	store, _ := g.deadLetterStore(r)
	e, err := store.Get(ctx, r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	d, err := queue.ParseDestinationID(e.RequestId, e.Body.FunctionName)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	fn := g.config().Function(d.Function)
	if fn == nil || d.Index >= len(fn.Destinations(d.Success)) {
		return nil, conflict(codeInvocationNotFailed, "the destination is no longer configured", nil)
	}
	insp := asynq.NewInspectorFromRedisClient(g.d.Redis)
	if err := insp.DeleteTask(queue.Name, d.ID()); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		return nil, err
	}
	if err := g.d.Submitter.QueueDestination(ctx, d, fn.Destinations(d.Success)[d.Index].Retries()); err != nil {
		return nil, submitError(err, d.RequestId)
	}
	if err := store.Delete(ctx, e.RequestId); err != nil && !errors.Is(err, deadletter.ErrNotFound) {
		g.log.Warn().Err(err).Str("delivery", e.RequestId).Msg("remove redriven dead letter")
	}
	g.log.Info().Str("delivery", d.ID()).Msg("destination dead letter redriven")
	return answer{http.StatusAccepted, map[string]string{"Delivery": d.ID()}}, nil
}
