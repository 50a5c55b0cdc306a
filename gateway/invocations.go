package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jobgate/jobgate/internal/logstore"
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
	st := record.Status(strings.ToUpper(q.Get("status"))) // any case: failed, FAILED
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
	if follow {
		client := g.client(r)
		if !g.streams.acquire(client) {
			return nil, &apiError{status: http.StatusTooManyRequests, code: codeRateLimited,
				msg: fmt.Sprintf("too many log streams open (gateway.follow_streams: %d)", g.streams.max)}
		}
		defer g.streams.release(client)
		// A stream outlives the server's WriteTimeout, up to follow_max_s.
		limit := time.Duration(g.config().Gateway.FollowMaxS) * time.Second
		_ = http.NewResponseController(w).SetWriteDeadline(g.now().Add(limit + 10*time.Second))
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	s := &logStream{w: w, g: g, id: id}
	var next int64
	for {
		lines, done, err := g.d.Logs.Range(ctx, logID, next)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn().Err(err).Str("request_id", id).Msg("read logs")
			}
			return nil, nil // the answer has begun: end the stream
		}
		if !s.write(lines) {
			return nil, nil
		}
		next += int64(len(lines))
		if !follow || done {
			return nil, nil
		}
		// No end marker yet: the stream also ends when the attempt can
		// write no more (ended without a log: terminated before it
		// started; a later attempt took over) or the record is gone.
		switch rec, err := g.d.Records.Get(ctx, id); {
		case errors.Is(err, record.ErrNotFound):
			s.note("ERROR the invocation and its log have expired (retention_h)")
			return nil, nil
		case err == nil && (rec.Attempt != attempt || rec.Status.Terminal()):
			// Its END is written before its final status: read once more.
			if lines, done, err := g.d.Logs.Range(ctx, logID, next); err == nil {
				if !s.write(lines) {
					return nil, nil
				}
				if !done && len(lines) == 0 && next == 0 && rec.StartTime != "" {
					s.note("ERROR the log of this attempt has expired (retention_h)")
				}
			}
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// logStream writes NDJSON log lines, flushing after each batch.
type logStream struct {
	w  http.ResponseWriter
	g  *Gateway
	id string
}

func (s *logStream) write(lines []string) bool {
	for _, l := range lines {
		if _, err := fmt.Fprintln(s.w, l); err != nil {
			return false
		}
	}
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return true
}

// note writes a platform line of the gateway's own.
func (s *logStream) note(text string) {
	b, _ := json.Marshal(logstore.Line{TS: s.g.now().UTC(), Stream: logstore.Platform, Line: text})
	s.write([]string{string(b)})
}

// getEvent returns an invocation's event as it was accepted, byte for
// byte (a destination's result refers to it when it is too large to
// carry).
func (g *Gateway) getEvent(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	if _, err := g.lookup(r.Context(), id); err != nil {
		return nil, err
	}
	ev, err := g.d.Records.Event(r.Context(), id)
	if errors.Is(err, record.ErrNotFound) {
		return nil, notFound(codeInvocationNotFound, "no event for %s (past retention)", id)
	}
	if err != nil {
		return nil, err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(ev)))
	_, _ = w.Write(ev) // as accepted: not re-encoded
	return nil, nil
}
