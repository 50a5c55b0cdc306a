package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jobgate/jobgate/internal/record"
)

// getInvocation handles GET /v1/invocations/{id}.
func (g *Gateway) getInvocation(_ http.ResponseWriter, r *http.Request) (any, error) {
	return g.lookup(r.Context(), r.PathValue("id"))
}

type listResponse struct {
	Invocations []*record.Record
	NextCursor  string
}

// listInvocations handles GET /v1/invocations?function=&status=&limit=&cursor=.
func (g *Gateway) listInvocations(_ http.ResponseWriter, r *http.Request) (any, error) {
	limit, cursor, err := page(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	st := record.Status(q.Get("status"))
	if st != "" && !st.Valid() {
		return nil, badRequest("unknown status %q", st)
	}
	recs, next, err := g.d.Records.List(r.Context(), record.Filter{Function: q.Get("function"), Status: st}, limit, cursor)
	if err != nil {
		return nil, err
	}
	if recs == nil {
		recs = []*record.Record{}
	}
	return listResponse{Invocations: recs, NextCursor: next}, nil
}

// getLogs streams NDJSON lines; with follow=1 it keeps the response open
// until the log is complete (END and Report written).
func (g *Gateway) getLogs(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	ctx := r.Context()
	rec, err := g.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	// One log per attempt; the current one unless ?attempt=N.
	attempt := rec.Attempt
	if s := r.URL.Query().Get("attempt"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > rec.Attempt {
			return nil, badRequest("attempt must be 1..%d", rec.Attempt)
		}
		attempt = n
	}
	logID := record.InstanceID(id, attempt)
	follow := r.URL.Query().Get("follow") == "1" || r.URL.Query().Get("follow") == "true"
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var next int64
	for {
		lines, done, err := g.d.Logs.Range(ctx, logID, next)
		if err != nil {
			g.log.Warn().Err(err).Str("request_id", id).Msg("read logs")
			return nil, nil // the answer has begun: end the stream
		}
		for _, l := range lines {
			if _, err := fmt.Fprintln(w, l); err != nil {
				return nil, nil
			}
		}
		next += int64(len(lines))
		if flusher != nil {
			flusher.Flush()
		}
		if !follow || done {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
