// Package control is the terminate protocol, both sides of it: a gateway
// asks for an invocation to be stopped without knowing which host runs
// it, and the worker that runs it acts. A request is a durable key
// (keyspace.Terminate: a worker that was down when it was announced still
// finds it when it re-attaches) plus an announcement on a channel every
// worker listens to (keyspace.Control).
package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
)

// Terminate modes, as stored in the request key.
const (
	grace = "grace" // SIGTERM, SIGKILL after the grace period
	kill  = "kill"  // SIGKILL now
)

// Requests reads and writes terminate requests.
type Requests struct {
	rdb       redis.UniversalClient
	keys      keyspace.Keys
	retention time.Duration
}

// New returns Requests under prefix; a request lives for retention.
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Requests {
	return &Requests{rdb: rdb, keys: keyspace.New(prefix), retention: retention}
}

// Request records a durable terminate request for id. The gateway writes
// it first: a worker between its last check and Start still finds it.
func (r *Requests) Request(ctx context.Context, id string, withGrace bool) error {
	mode := kill
	if withGrace {
		mode = grace
	}
	if err := r.rdb.Set(ctx, r.keys.Terminate(id), mode, r.retention).Err(); err != nil {
		return fmt.Errorf("terminate request %s: %w", id, err)
	}
	return nil
}

// Announce tells every worker to look for id's request.
func (r *Requests) Announce(ctx context.Context, id string) error {
	if err := r.rdb.Publish(ctx, r.keys.Control(), id).Err(); err != nil {
		return fmt.Errorf("announce terminate %s: %w", id, err)
	}
	return nil
}

// Lookup reports whether a terminate was requested for id, and with grace.
func (r *Requests) Lookup(ctx context.Context, id string) (requested, withGrace bool, err error) {
	mode, err := r.rdb.Get(ctx, r.keys.Terminate(id)).Result()
	if errors.Is(err, redis.Nil) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("terminate request %s: %w", id, err)
	}
	return true, mode == grace, nil
}

// Listen subscribes to announcements and calls fn with each announced id
// until ctx ends; it returns once subscribed. done is closed when the
// listener has stopped.
func (r *Requests) Listen(ctx context.Context, fn func(id string)) (done <-chan struct{}, err error) {
	ps := r.rdb.Subscribe(ctx, r.keys.Control())
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("subscribe control channel: %w", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ch := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				ps.Close()
				return
			case msg, ok := <-ch:
				if !ok {
					return
				}
				fn(msg.Payload)
			}
		}
	}()
	return stopped, nil
}
