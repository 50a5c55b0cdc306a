// Package connpool keeps one shared connection per key, dialled on first
// use and closed once it has been idle for a while: a caller that sends
// now and then to the same few peers (destination brokers) pays the
// connect once, and holds nothing for a peer it stopped using.
package connpool

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrClosed is returned by Use after Close.
var ErrClosed = errors.New("connection pool closed")

// Pool holds connections of type C by key. Connections must be safe for
// concurrent use: callers of the same key share one.
type Pool[C any] struct {
	idle  time.Duration
	alive func(C) bool
	close func(C)

	mu     sync.Mutex
	conns  map[string]*entry[C]
	closed bool
}

type entry[C any] struct {
	conn  C
	users int
	// dead: out of the map; closed once its last user is done.
	dead  bool
	timer *time.Timer
}

// New returns a pool that closes a connection idle for idle. alive (nil:
// always) says whether a pooled connection can still be used; close
// closes one.
func New[C any](idle time.Duration, alive func(C) bool, close func(C)) *Pool[C] {
	if alive == nil {
		alive = func(C) bool { return true }
	}
	return &Pool[C]{idle: idle, alive: alive, close: close, conns: map[string]*entry[C]{}}
}

// Use runs fn with key's connection, dialling one if none is open. When
// fn fails the connection is dropped (closed once no one uses it), so a
// broken one is never handed out again: the next Use dials afresh.
func (p *Pool[C]) Use(ctx context.Context, key string, dial func(context.Context) (C, error), fn func(C) error) error {
	e, err := p.acquire(ctx, key, dial)
	if err != nil {
		return err
	}
	err = fn(e.conn)
	p.release(key, e, err != nil)
	return err
}

// Len is the number of open, usable connections.
func (p *Pool[C]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Pool[C]) acquire(ctx context.Context, key string, dial func(context.Context) (C, error)) (*entry[C], error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if e := p.conns[key]; e != nil {
		if p.alive(e.conn) {
			e.users++
			if e.timer != nil {
				// A timer that fired already finds it in use (expire).
				e.timer.Stop()
				e.timer = nil
			}
			p.mu.Unlock()
			return e, nil
		}
		closeNow := p.drop(key, e)
		p.mu.Unlock()
		if closeNow {
			p.close(e.conn)
		}
	} else {
		p.mu.Unlock()
	}

	// Dialled without the lock: a slow peer must not hold up the others.
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.close(c)
		return nil, ErrClosed
	}
	if e := p.conns[key]; e != nil {
		// Another caller dialled the same key meanwhile: share theirs.
		e.users++
		p.mu.Unlock()
		p.close(c)
		return e, nil
	}
	e := &entry[C]{conn: c, users: 1}
	p.conns[key] = e
	p.mu.Unlock()
	return e, nil
}

func (p *Pool[C]) release(key string, e *entry[C], failed bool) {
	p.mu.Lock()
	e.users--
	closeNow := false
	switch {
	case !e.dead && failed:
		closeNow = p.drop(key, e)
	case e.users > 0:
	case e.dead:
		closeNow = true // dropped while in use
	default:
		e.timer = time.AfterFunc(p.idle, func() { p.expire(key, e) })
	}
	p.mu.Unlock()
	if closeNow {
		p.close(e.conn)
	}
}

// expire drops e if it is still unused when its idle time is up.
func (p *Pool[C]) expire(key string, e *entry[C]) {
	p.mu.Lock()
	closeNow := e.users == 0 && !e.dead && p.drop(key, e)
	p.mu.Unlock()
	if closeNow {
		p.close(e.conn)
	}
}

// drop takes e out of the pool, called with p.mu held. It reports whether
// the caller must close it now (unlocked); one in use is closed by its
// last user's release.
func (p *Pool[C]) drop(key string, e *entry[C]) bool {
	e.dead = true
	if p.conns[key] == e {
		delete(p.conns, key)
	}
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	return e.users == 0
}

// Close closes every idle connection now, and one in use when its user is
// done; Use fails with ErrClosed from then on.
func (p *Pool[C]) Close() {
	p.mu.Lock()
	p.closed = true
	var idle []C
	for key, e := range p.conns {
		if p.drop(key, e) {
			idle = append(idle, e.conn)
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		p.close(c)
	}
}
