package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jobgate/jobgate/internal/record"
)

// With replicated Redis a failover can drop writes the old master had
// acknowledged (replication is asynchronous). An attempt's end recorded
// just before one would leave its record RUNNING forever: its instance is
// gone, and the lost-node sweeper only ends instances of nodes without a
// lease. So each worker remembers the ends it recorded lately and checks
// that no RUNNING record of its node lacks a supervised attempt.

const (
	// endsKept is how long an end is remembered for a re-write.
	endsKept = 10 * time.Minute
	// endsCheckEvery paces the check; a record must be found unsupervised
	// by two checks in a row before it is ended.
	endsCheckEvery = 10 * time.Second
)

// recentEnds are the outcomes this worker recorded lately, by RequestId.
type recentEnds struct {
	mu sync.Mutex
	m  map[string]recentEnd
}

type recentEnd struct {
	attempt int
	started time.Time
	o       outcome
	at      time.Time
}

func (r *recentEnds) add(id string, e recentEnd) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, old := range r.m {
		if e.at.Sub(old.at) > endsKept {
			delete(r.m, k)
		}
	}
	r.m[id] = e
}

func (r *recentEnds) get(id string, attempt int) (recentEnd, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[id]
	return e, ok && e.attempt == attempt
}

// inflight counts the task deliveries being handled here, by RequestId:
// a SCHEDULING record of this node with none is one whose scheduling was
// cut short (Redis away when it would have been put back to PENDING).
type inflight struct {
	mu sync.Mutex
	m  map[string]int
}

// enterFirst enters id unless a delivery of it is being handled here
// already (false then).
func (f *inflight) enterFirst(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[id] > 0 {
		return false
	}
	f.m[id]++
	return true
}

func (f *inflight) leave(id string) {
	f.mu.Lock()
	if f.m[id]--; f.m[id] <= 0 {
		delete(f.m, id)
	}
	f.mu.Unlock()
}

// unlessIn runs do unless id is being handled; no delivery of id starts
// meanwhile.
func (f *inflight) unlessIn(id string, do func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[id] == 0 {
		do()
	}
}

// checkEnds runs checkEndsOnce every endsCheckEvery.
func (w *Worker) checkEnds(ctx context.Context) {
	t := time.NewTicker(endsCheckEvery)
	defer t.Stop()
	suspect := map[string]int{} // RequestId → attempt found unsupervised last time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var err error
		if suspect, err = w.checkEndsOnce(ctx, suspect); err != nil {
			w.log.Warn().Err(err).Msg("check of lost ends")
		}
	}
}

// checkEndsOnce finds this node's RUNNING records without a supervised
// attempt; one found so twice in a row (the same attempt) has lost its
// end: it is recorded again from memory, or, if this worker does not
// remember it (it restarted since), ended as lost and retried per its
// function's policy. A SCHEDULING record of this node that no delivery
// here is handling (twice in a row) had its scheduling cut short: it is
// PENDING again (requeueScheduling). It returns this check's suspects.
func (w *Worker) checkEndsOnce(ctx context.Context, suspect map[string]int) (map[string]int, error) {
	ids, err := w.records.Running(ctx)
	if err != nil {
		return suspect, err
	}
	node := w.config().Worker.Node
	next := map[string]int{}
	for _, id := range ids {
		if w.runners.get(id) != nil {
			continue
		}
		rec, err := w.records.Get(ctx, id)
		if err != nil {
			continue // gone, or Redis trouble: the next check sees it
		}
		// A runner is added before its RUNNING write: none now means
		// none is coming for this attempt.
		if (rec.Status != record.Running && rec.Status != record.Scheduling) || rec.Node != node || w.runners.get(id) != nil {
			continue
		}
		if n, seen := suspect[id]; !seen || n != rec.Attempt {
			next[id] = rec.Attempt
			continue
		}
		if rec.Status == record.Scheduling {
			w.inflight.unlessIn(id, func() { w.requeueScheduling(ctx, rec) })
			continue
		}
		a := w.newAttempt(id, rec.Attempt, rec.FunctionName)
		if e, ok := w.ends.get(id, rec.Attempt); ok {
			a.started = e.started
			a.log.Warn().Str("status", string(e.o.Status)).Msg("the recorded end of this attempt was lost (a Redis failover?): recording it again")
			a.complete(ctx, e.o)
			continue
		}
		now := w.now()
		if a.started = parseTime(rec.StartTime); a.started.IsZero() {
			a.started = now
		}
		o := outcome{Status: record.Failed, StatusCode: record.CodeNodeLost, ExitCode: -1, EndTime: now,
			DurationMs: max(now.Sub(a.started).Milliseconds(), 0), MemoryMB: a.memMB,
			Message: fmt.Sprintf("NodeLost: worker %s has no instance for this attempt and no memory of its end (lost with a Redis failover while the worker restarted?); presumed stopped", node)}
		a.log.Warn().Msg("RUNNING on this node without an instance: ended as NodeLost")
		a.complete(ctx, o)
	}
	return next, nil
}

// requeueScheduling puts an attempt whose scheduling here was cut short
// back to PENDING and gives up its start claim: its task comes back by
// asynq's retry, or, if a failover lost it, by the orphan sweeper (a
// PENDING record without a live task).
func (w *Worker) requeueScheduling(ctx context.Context, rec *record.Record) {
	msg := fmt.Sprintf("scheduling on %s was cut short (Redis unreachable or failed over); queued again", rec.Node)
	if err := w.records.UpdateFrom(ctx, rec.RequestId, []record.Status{record.Scheduling}, record.Update{Status: record.Pending, Message: &msg}); err != nil {
		return // changed meanwhile, or Redis trouble: the next check decides
	}
	w.claims.release(ctx, record.InstanceID(rec.RequestId, rec.Attempt), rec.Node)
	w.log.Warn().Str("request_id", rec.RequestId).Msg("SCHEDULING here with no delivery being handled: queued again")
}
