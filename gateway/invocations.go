package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jobgate/jobgate/internal/record"
)

func (g *Gateway) getInvocation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, err := g.d.Records.Get(r.Context(), id)
	if errors.Is(err, record.ErrNotFound) {
		writeError(w, http.StatusNotFound, "InvocationNotFound", fmt.Sprintf("no invocation %s (unknown or past retention)", id), id)
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

type listResponse struct {
	Invocations []*record.Record
	NextCursor  string
}

func (g *Gateway) listInvocations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "InvalidParameterValue", "limit must be 1..100", "")
			return
		}
		limit = n
	}
	st := record.Status(q.Get("status"))
	if st != "" && !st.Valid() {
		writeError(w, http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("unknown status %q", st), "")
		return
	}
	recs, next, err := g.d.Records.List(r.Context(), record.Filter{Function: q.Get("function"), Status: st}, limit, q.Get("cursor"))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), "")
		return
	}
	if recs == nil {
		recs = []*record.Record{}
	}
	writeJSON(w, http.StatusOK, listResponse{Invocations: recs, NextCursor: next})
}

// getLogs streams NDJSON lines; with follow=1 it keeps the response open
// until the log is complete (END and Report written).
func (g *Gateway) getLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	rec, err := g.d.Records.Get(ctx, id)
	if err != nil {
		if errors.Is(err, record.ErrNotFound) {
			writeError(w, http.StatusNotFound, "InvocationNotFound", fmt.Sprintf("no invocation %s", id), id)
		} else {
			writeError(w, http.StatusServiceUnavailable, "StoreUnavailable", err.Error(), id)
		}
		return
	}
	// One log per attempt; the current one unless ?attempt=N.
	attempt := rec.Attempt
	if s := r.URL.Query().Get("attempt"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > rec.Attempt {
			writeError(w, http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("attempt must be 1..%d", rec.Attempt), id)
			return
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
			return
		}
		for _, l := range lines {
			if _, err := fmt.Fprintln(w, l); err != nil {
				return
			}
		}
		next += int64(len(lines))
		if flusher != nil {
			flusher.Flush()
		}
		if !follow || done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
