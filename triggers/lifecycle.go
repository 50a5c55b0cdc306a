package triggers

import (
	"context"
	"errors"
	"sync"
)

// Lifecycle is the Start/Stop/Health/Name half of a Source that every
// adapter shares: it runs the adapter's loop on its own context.
type Lifecycle struct {
	name   string
	loop   func(ctx context.Context)
	close  func() error
	mu     sync.Mutex
	health error
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Init sets the loop (usually Deliverer.Pump) and what Stop closes.
func (l *Lifecycle) Init(d *Deliverer, loop func(ctx context.Context), closeFn func() error) {
	l.name, l.loop, l.close, l.health = d.Function+"/"+d.Trigger, loop, closeFn, errors.New("not connected yet")
}

// Name is function/trigger.
func (l *Lifecycle) Name() string { return l.name }

// Health is nil while the last broker call succeeded.
func (l *Lifecycle) Health() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.health
}

// SetHealth records the last broker call's outcome.
func (l *Lifecycle) SetHealth(err error) {
	l.mu.Lock()
	l.health = err
	l.mu.Unlock()
}

// Start runs the loop until Stop.
func (l *Lifecycle) Start(ctx context.Context) error {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.loop(ctx)
	}()
	return nil
}

// Stop ends the loop; what was fetched but not acknowledged stays with
// the broker, which redelivers it.
func (l *Lifecycle) Stop(ctx context.Context) error {
	if l.cancel != nil {
		l.cancel()
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.close != nil {
		return l.close()
	}
	return nil
}
