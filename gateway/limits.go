package gateway

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter holds a token bucket per client (token or address), dropping
// buckets idle for idleAfter.
type limiter struct {
	rps   rate.Limit
	burst int
	mu    sync.Mutex
	by    map[string]*bucket
	swept time.Time
	max   int // maxBuckets unless set (tests)
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

const idleAfter = 10 * time.Minute

// maxBuckets bounds the limiter's memory: past it, new clients share one
// overflow bucket (a flood from many addresses is limited as one).
const maxBuckets = 100_000

const overflowClient = "overflow"

func newLimiter(rps float64, burst int) *limiter {
	if rps <= 0 {
		return nil
	}
	return &limiter{rps: rate.Limit(rps), burst: max(burst, 1), by: map[string]*bucket{}}
}

// allow takes one request for client at now; when refused, it says when
// to retry.
func (l *limiter) allow(client string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > idleAfter {
		for k, b := range l.by {
			if now.Sub(b.used) > idleAfter {
				delete(l.by, k)
			}
		}
		l.swept = now
	}
	b := l.by[client]
	if b == nil && len(l.by) >= l.maxBuckets() {
		client = overflowClient
		b = l.by[client]
	}
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rps, l.burst)}
		l.by[client] = b
	}
	b.used = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (l *limiter) maxBuckets() int {
	if l.max > 0 {
		return l.max
	}
	return maxBuckets
}

// rateLimited answers 429 with Retry-After (whole seconds, at least 1).
func (g *Gateway) rateLimited(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(wait.Seconds(), 1)))))
	g.writeError(w, r, &apiError{status: http.StatusTooManyRequests, code: codeRateLimited, msg: "request rate limit exceeded (gateway.rate_limit)"}, "")
}

// streams counts open log streams per client.
type streams struct {
	max int
	mu  sync.Mutex
	by  map[string]int
}

func (s *streams) acquire(client string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by[client] >= s.max {
		return false
	}
	s.by[client]++
	return true
}

func (s *streams) release(client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by[client]--; s.by[client] <= 0 {
		delete(s.by, client)
	}
}
