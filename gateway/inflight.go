package gateway

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"golang.org/x/sync/semaphore"
)

// errInflightFull: the gateway holds gateway.max_inflight_mb of request
// bodies already; the sender is told to come back (503, Retry-After).
var errInflightFull = errors.New("too many request body bytes in flight")

// meteredBody takes every byte it reads from the gateway-wide budget of
// body bytes in flight; the request gives them back when it is answered.
// No sender holds memory it has not sent, and all of them together hold
// at most the budget.
type meteredBody struct {
	io.ReadCloser
	sem  *semaphore.Weighted
	held int64
}

func (m *meteredBody) Read(p []byte) (int, error) {
	n, err := m.ReadCloser.Read(p)
	if n > 0 {
		if !m.sem.TryAcquire(int64(n)) {
			return 0, errInflightFull
		}
		m.held += int64(n)
	}
	return n, err
}

func (m *meteredBody) release() {
	if m.held > 0 {
		m.sem.Release(m.held)
		m.held = 0
	}
}

// meter wraps r's body for the budget; call the returned func when the
// request is answered.
func (g *Gateway) meter(r *http.Request) func() {
	if g.inflight == nil || r.Body == nil || r.Body == http.NoBody {
		return func() {}
	}
	m := &meteredBody{ReadCloser: r.Body, sem: g.inflight}
	r.Body = m
	return m.release
}

// busy is the answer when the budget is spent.
func busy(w http.ResponseWriter) *apiError {
	w.Header().Set("Retry-After", strconv.Itoa(1))
	return &apiError{status: http.StatusServiceUnavailable, code: codeServerBusy,
		msg: "the gateway is receiving too much at once (gateway.max_inflight_mb); try again"}
}
