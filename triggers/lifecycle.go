package triggers

import (
	"context"
	"errors"
	"sync"

	"github.com/jobgate/jobgate/internal/startstop"
)

// Lifecycle is the Start/Stop/Health/Name half of a Source that every
// adapter shares: it runs the adapter's loop on its own context.
type Lifecycle struct {
	name   string
	loop   func(ctx context.Context)
	close  func() error
	mu     sync.Mutex
	health error
	group  *startstop.Group
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
	l.group = startstop.Start(ctx)
	l.group.Go(l.loop)
	return nil
}

// Stop ends the loop; what was fetched but not acknowledged stays with
// the broker, which redelivers it.
func (l *Lifecycle) Stop(ctx context.Context) error {
	if err := l.group.Stop(ctx); err != nil {
		return err
	}
	if l.close != nil {
		return l.close()
	}
	return nil
}
