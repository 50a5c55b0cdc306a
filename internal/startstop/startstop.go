// Package startstop is the one start/stop shape every long-lived
// component uses (river's internal/startstop): a Group owns a lifetime
// context and every goroutine started on it, and Stop cancels the context
// and waits for all of them.
package startstop

import (
	"context"
	"sync"
)

// Group tracks goroutines that live until Stop. The zero value is not
// usable; make one with Start.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start begins a lifetime. It keeps parent's values but not its
// cancellation: a component outlives the context it was started with
// (often a request or a startup deadline) until Stop.
func Start(parent context.Context) *Group {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is done once Stop has been called.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn on its own goroutine with the group's context; Stop waits
// for it to return.
func (g *Group) Go(fn func(ctx context.Context)) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn(g.ctx)
	}()
}

// Stop cancels the group's context and waits for its goroutines, or for
// ctx to end (then it returns ctx's error and they finish on their own).
// A nil Group is stopped already.
func (g *Group) Stop(ctx context.Context) error {
	if g == nil {
		return nil
	}
	g.cancel()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
