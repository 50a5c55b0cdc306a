package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/jsonobj"
	"github.com/jobgate/jobgate/internal/record"
)

// Helpers the endpoints share: the body, paging, record lookup.

// readBody reads at most the largest event fn takes (nil: an unknown
// function, SCF's limit): SCF_CUSTOM_CONTAINER_EVENT=<event> under
// Linux's per-string limit, or max_event_mb with large_events: file.
func readBody(w http.ResponseWriter, r *http.Request, fn *config.Function) ([]byte, error) {
	limit := jobenv.MaxEventBytes
	if fn != nil {
		limit = fn.MaxEventBytes()
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, int64(limit)), r.ContentLength, limit)
	var big *http.MaxBytesError
	if errors.As(err, &big) {
		if limit != jobenv.MaxEventBytes {
			return nil, tooLarge(fmt.Sprintf("event is over %d bytes, the function's max_event_mb", limit))
		}
		return nil, tooLarge(fmt.Sprintf(
			"event is over %d bytes: SCF_CUSTOM_CONTAINER_EVENT=<event> must stay under Linux's 128 KiB per-string limit (131072 bytes including the NUL); large_events: file takes larger ones",
			jobenv.MaxEventBytes))
	}
	if errors.Is(err, errInflightFull) {
		return nil, busy(w)
	}
	if err != nil {
		return nil, badRequest("read body: %v", err)
	}
	return body, nil
}

// presizeMax bounds how much of a declared Content-Length is allocated
// before any byte arrives: a sender's claim is not a reason to hold
// memory (200 connections declaring 6 MiB and sending one byte held
// 1.2 GiB when the whole claim was allocated). Small events, the common
// case, are still read without regrowing.
const presizeMax = 64 << 10

// readAll is io.ReadAll with the buffer sized by a declared length
// (bounded by limit and presizeMax), so a small body is read without
// regrowing.
func readAll(r io.Reader, declared int64, limit int) ([]byte, error) {
	if declared <= 0 || declared > int64(limit) {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, min(declared, presizeMax)+1) // +1: EOF is seen without growing
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // a body longer than declared: grow
		}
	}
}

// readEvent reads the body and requires a JSON object.
func readEvent(w http.ResponseWriter, r *http.Request, fn *config.Function) ([]byte, error) {
	body, err := readBody(w, r, fn)
	if err != nil {
		return nil, err
	}
	if !jsonobj.IsObject(body) {
		return nil, badRequest("event must be a JSON object")
	}
	return body, nil
}

// page is a listing's ?limit= (1..100, default 20) and ?cursor=.
func page(r *http.Request) (limit int, cursor string, err error) {
	limit = 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			return 0, "", badRequest("limit must be 1..100")
		}
		limit = n
	}
	return limit, r.URL.Query().Get("cursor"), nil
}

// lookup returns the record of id, or the answer for its absence. An id
// with a colon is no RequestId (it would name another key of the record,
// such as its event): not found, without asking the store.
func (g *Gateway) lookup(ctx context.Context, id string) (*record.Record, error) {
	if strings.Contains(id, ":") {
		return nil, notFound(codeInvocationNotFound, "no invocation %s", id)
	}
	rec, err := g.d.Records.Get(ctx, id)
	if errors.Is(err, record.ErrNotFound) {
		return nil, notFound(codeInvocationNotFound, "no invocation %s (unknown or past retention)", id)
	}
	return rec, err
}
