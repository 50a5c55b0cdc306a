package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
)

// Waiting errors: the event is fine but must wait for a slot. asynq
// retries them without counting a failure.
var (
	// errOverLimit: the function runs at its concurrency (SCF 432).
	errOverLimit = errors.New("function is at its concurrency limit")
	// errNodeFull: this worker's capacity_mb is used up.
	errNodeFull = errors.New("worker capacity is used up")
	// errNotMine: another worker holds the start claim.
	errNotMine = errors.New("invocation claimed by another worker")
)

func isWait(err error) bool {
	return errors.Is(err, errOverLimit) || errors.Is(err, errNodeFull) || errors.Is(err, errNotMine)
}

// leaseTTL bounds how long a crashed worker's concurrency slots stay
// taken; supervisors renew their leases well within it.
const (
	leaseTTL   = 60 * time.Second
	leaseRenew = 20 * time.Second
)

// acquireScript: KEYS[1] = the function's lease set; ARGV = now (ms),
// expiry (ms), limit, member. Expired leases (crashed workers) are dropped
// first; holding a lease already counts as acquiring it.
var acquireScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], 2 * (tonumber(ARGV[2]) - tonumber(ARGV[1])))
return 1`)

// admission is what an instance holds while it runs: a concurrency lease
// (when the function has a limit) and a share of the node's capacity.
type admission struct {
	w        *Worker
	function string
	member   string
	leased   bool
	memoryMB int
}

func (w *Worker) leaseKey(fn string) string { return w.config().Redis.Prefix + ":conc:" + fn }

// admit takes a slot for instance id of fn, or says why it must wait.
func (w *Worker) admit(ctx context.Context, fn *config.Function, id string) (*admission, error) {
	a := &admission{w: w, function: fn.Name, member: id}
	if cap := w.config().Worker.CapacityMB; cap > 0 {
		w.mu.Lock()
		if w.usedMB+fn.MemoryMB > cap {
			used := w.usedMB
			w.mu.Unlock()
			return nil, fmt.Errorf("%w: %d of %d MB in use, this function needs %d", errNodeFull, used, cap, fn.MemoryMB)
		}
		w.usedMB += fn.MemoryMB
		a.memoryMB = fn.MemoryMB
		w.mu.Unlock()
	}
	if fn.Concurrency > 0 {
		now := w.now()
		ok, err := acquireScript.Run(ctx, w.rdb, []string{w.leaseKey(fn.Name)},
			now.UnixMilli(), now.Add(leaseTTL).UnixMilli(), fn.Concurrency, id).Int()
		if err != nil || ok == 0 {
			a.release(context.WithoutCancel(ctx))
			if err != nil {
				return nil, fmt.Errorf("concurrency lease: %w", err)
			}
			return nil, fmt.Errorf("%w (%d)", errOverLimit, fn.Concurrency)
		}
		a.leased = true
	}
	return a, nil
}

// renew extends the concurrency lease.
func (a *admission) renew(ctx context.Context) {
	if a == nil || !a.leased {
		return
	}
	exp := a.w.now().Add(leaseTTL).UnixMilli()
	_ = a.w.rdb.ZAddXX(ctx, a.w.leaseKey(a.function), redis.Z{Score: float64(exp), Member: a.member}).Err()
}

// release gives the slots back; safe to call twice.
func (a *admission) release(ctx context.Context) {
	if a == nil {
		return
	}
	if a.leased {
		_ = a.w.rdb.ZRem(ctx, a.w.leaseKey(a.function), a.member).Err()
		a.leased = false
	}
	if a.memoryMB > 0 {
		a.w.mu.Lock()
		a.w.usedMB -= a.memoryMB
		a.w.mu.Unlock()
		a.memoryMB = 0
	}
}

// readmit re-takes the slots of an instance found running at start.
func (w *Worker) readmit(ctx context.Context, fn *config.Function, id string) *admission {
	a := &admission{w: w, function: fn.Name, member: id}
	w.mu.Lock()
	w.usedMB += fn.MemoryMB
	a.memoryMB = fn.MemoryMB
	w.mu.Unlock()
	if fn.Concurrency > 0 {
		exp := w.now().Add(leaseTTL).UnixMilli()
		if w.rdb.ZAdd(ctx, w.leaseKey(fn.Name), redis.Z{Score: float64(exp), Member: id}).Err() == nil {
			a.leased = true
		}
	}
	return a
}
