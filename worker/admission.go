package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/keyspace"
)

// leaseTTL bounds how long a crashed worker's concurrency slots stay
// taken; supervisors renew their leases well within it.
const (
	leaseTTL   = 60 * time.Second
	leaseRenew = 20 * time.Second
)

// admitter decides whether an attempt may start now: the node's
// capacity_mb (in memory, this worker's own) and the function's
// concurrency (leases in Redis, shared by every worker).
type admitter struct {
	rdb      redis.UniversalClient
	keys     keyspace.Keys
	now      func() time.Time
	capacity func() int // capacity_mb; 0 = unlimited

	mu     sync.Mutex
	usedMB int // memory_mb of admitted instances
}

// admission is what an instance holds while it runs: a concurrency lease
// (when the function has a limit) and a share of the node's capacity.
type admission struct {
	a        *admitter
	function string
	member   string
	leased   bool
	memoryMB int
}

// admit takes a slot for instance id of fn, or says why it must wait.
func (a *admitter) admit(ctx context.Context, fn *config.Function, id string) (*admission, error) {
	adm := &admission{a: a, function: fn.Name, member: id}
	if capMB := a.capacity(); capMB > 0 {
		a.mu.Lock()
		if a.usedMB+fn.MemoryMB > capMB {
			used := a.usedMB
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: %d of %d MB in use, this function needs %d", errNodeFull, used, capMB, fn.MemoryMB)
		}
		a.usedMB += fn.MemoryMB
		adm.memoryMB = fn.MemoryMB
		a.mu.Unlock()
	}
	if fn.Concurrency > 0 {
		now := a.now()
		ok, err := keyspace.LeaseAcquire.Run(ctx, a.rdb, []string{a.keys.Concurrency(fn.Name)},
			now.UnixMilli(), now.Add(leaseTTL).UnixMilli(), fn.Concurrency, id).Int()
		if err != nil || ok == 0 {
			adm.release(context.WithoutCancel(ctx))
			if err != nil {
				return nil, fmt.Errorf("concurrency lease: %w", err)
			}
			return nil, fmt.Errorf("%w (%d)", errOverLimit, fn.Concurrency)
		}
		adm.leased = true
	}
	return adm, nil
}

// readmit re-takes the slots of an instance found running at start: it
// runs already, so it is admitted whatever the limits say.
func (a *admitter) readmit(ctx context.Context, fn *config.Function, id string) *admission {
	adm := &admission{a: a, function: fn.Name, member: id, memoryMB: fn.MemoryMB}
	a.mu.Lock()
	a.usedMB += fn.MemoryMB
	a.mu.Unlock()
	if fn.Concurrency > 0 {
		exp := a.now().Add(leaseTTL).UnixMilli()
		if a.rdb.ZAdd(ctx, a.keys.Concurrency(fn.Name), redis.Z{Score: float64(exp), Member: id}).Err() == nil {
			adm.leased = true
		}
	}
	return adm
}

// renew extends the concurrency lease (nil-safe).
func (adm *admission) renew(ctx context.Context) {
	if adm == nil || !adm.leased {
		return
	}
	exp := adm.a.now().Add(leaseTTL).UnixMilli()
	_ = adm.a.rdb.ZAddXX(ctx, adm.a.keys.Concurrency(adm.function), redis.Z{Score: float64(exp), Member: adm.member}).Err()
}

// release gives the slots back; nil-safe, and safe to call twice.
func (adm *admission) release(ctx context.Context) {
	if adm == nil {
		return
	}
	if adm.leased {
		_ = adm.a.rdb.ZRem(ctx, adm.a.keys.Concurrency(adm.function), adm.member).Err()
		adm.leased = false
	}
	if adm.memoryMB > 0 {
		adm.a.mu.Lock()
		adm.a.usedMB -= adm.memoryMB
		adm.a.mu.Unlock()
		adm.memoryMB = 0
	}
}
