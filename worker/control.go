package worker

import (
	"context"
	"sync"
	"time"

	"github.com/jobgate/jobgate/worker/runtime"
)

// runners is the set of attempts this worker supervises, by RequestId.
type runners struct {
	mu sync.Mutex
	m  map[string]*attempt
}

// add registers a; false if an attempt of that RequestId is supervised
// already.
func (r *runners) add(a *attempt) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[a.id] != nil {
		return false
	}
	r.m[a.id] = a
	return true
}

func (r *runners) remove(id string) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}

// all returns the attempts supervised now.
func (r *runners) all() []*attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*attempt, 0, len(r.m))
	for _, a := range r.m {
		out = append(out, a)
	}
	return out
}

func (r *runners) get(id string) *attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

// deliverStop passes a pending terminate request for id to its
// supervisor, if this worker runs it.
func (w *Worker) deliverStop(ctx context.Context, id string) {
	requested, grace, err := w.control.Lookup(ctx, id)
	if err != nil || !requested {
		return
	}
	if a := w.runners.get(id); a != nil {
		a.requestStop(grace)
	}
}

// terminateRequested reports whether a user asked to terminate id.
func (w *Worker) terminateRequested(ctx context.Context, id string) bool {
	requested, _, err := w.control.Lookup(ctx, id)
	return err == nil && requested
}

// oomTracker remembers instances the kernel OOM-killed in, as containerd
// reports them, until their supervisor asks.
type oomTracker struct {
	mu sync.Mutex
	m  map[string]bool
}

// watch records OOM kills until ctx ends, resubscribing if the event
// stream breaks (containerd restarts).
func (o *oomTracker) watch(ctx context.Context, rt *runtime.Runtime) {
	for ctx.Err() == nil {
		for id := range rt.SubscribeOOM(ctx) {
			o.mu.Lock()
			o.m[id] = true
			o.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// take reports and forgets whether container id was OOM-killed.
func (o *oomTracker) take(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	v := o.m[id]
	delete(o.m, id)
	return v
}
