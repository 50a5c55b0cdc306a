package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/control"
)

// stopRequest asks a supervisor to end its instance as a user terminate.
type stopRequest struct{ grace bool }

// listenControl delivers terminate requests to the supervisors of this
// worker; a request for an instance elsewhere is ignored here.
func (w *Worker) listenControl(ctx context.Context) error {
	ps := w.rdb.Subscribe(ctx, control.Channel(w.config().Redis.Prefix))
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return fmt.Errorf("subscribe control channel: %w", err)
	}
	go func() {
		<-w.life.Done()
		ps.Close()
	}()
	go func() {
		for msg := range ps.Channel() {
			w.deliverStop(w.life, msg.Payload)
		}
	}()
	return nil
}

// deliverStop passes a pending terminate request for id to its
// supervisor, if this worker runs it.
func (w *Worker) deliverStop(ctx context.Context, id string) {
	mode, err := w.rdb.Get(ctx, control.TerminateKey(w.config().Redis.Prefix, id)).Result()
	if err == redis.Nil || err != nil {
		return
	}
	w.mu.Lock()
	ch := w.watching[id]
	w.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- stopRequest{grace: mode == control.Grace}:
	default:
	}
}

// terminateRequested reports whether a user asked to terminate id.
func (w *Worker) terminateRequested(ctx context.Context, id string) bool {
	n, err := w.rdb.Exists(ctx, control.TerminateKey(w.config().Redis.Prefix, id)).Result()
	return err == nil && n == 1
}

// watchOOM records OOM kills reported by containerd, resubscribing if the
// event stream breaks (containerd restarts).
func (w *Worker) watchOOM() {
	go func() {
		for w.life.Err() == nil {
			for id := range w.rt.SubscribeOOM(w.life) {
				w.mu.Lock()
				w.oomed[id] = true
				w.mu.Unlock()
			}
			select {
			case <-w.life.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// takeOOM reports and forgets whether instance id was OOM-killed.
func (w *Worker) takeOOM(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := w.oomed[id]
	delete(w.oomed, id)
	return v
}
