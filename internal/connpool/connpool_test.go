package connpool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// conn is a stand-in connection: this package only holds them.
type conn struct {
	id     int
	closed atomic.Int32
	broken atomic.Bool
}

type dialer struct {
	mu    sync.Mutex
	conns []*conn
}

func (d *dialer) dial(context.Context) (*conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &conn{id: len(d.conns)}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *dialer) dialled() []*conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*conn(nil), d.conns...)
}

func newPool(idle time.Duration) *Pool[*conn] {
	return New(idle, func(c *conn) bool { return !c.broken.Load() }, func(c *conn) { c.closed.Add(1) })
}

func use(t *testing.T, p *Pool[*conn], d *dialer, key string, err error) *conn {
	t.Helper()
	var got *conn
	if e := p.Use(context.Background(), key, d.dial, func(c *conn) error { got = c; return err }); !errors.Is(e, err) {
		t.Fatalf("Use: %v, want %v", e, err)
	}
	return got
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("never:", what)
		}
	}
}

func TestReusesOnePerKey(t *testing.T) {
	t.Parallel()
	p, d := newPool(time.Hour), &dialer{}
	a1, a2, b := use(t, p, d, "a", nil), use(t, p, d, "a", nil), use(t, p, d, "b", nil)
	if a1 != a2 || a1 == b || len(d.dialled()) != 2 || p.Len() != 2 {
		t.Fatalf("a %d %d, b %d, dialled %d, pooled %d", a1.id, a2.id, b.id, len(d.dialled()), p.Len())
	}
	if a1.closed.Load() != 0 {
		t.Fatal("a pooled connection was closed")
	}
}

func TestFailureDropsTheConnection(t *testing.T) {
	t.Parallel()
	p, d := newPool(time.Hour), &dialer{}
	boom := errors.New("boom")
	first := use(t, p, d, "a", boom)
	if first.closed.Load() != 1 || p.Len() != 0 {
		t.Fatalf("failed connection: closed %d times, pooled %d", first.closed.Load(), p.Len())
	}
	if next := use(t, p, d, "a", nil); next == first {
		t.Fatal("a failed connection was handed out again")
	}
}

func TestDeadConnectionIsRedialled(t *testing.T) {
	t.Parallel()
	p, d := newPool(time.Hour), &dialer{}
	first := use(t, p, d, "a", nil)
	first.broken.Store(true)
	if next := use(t, p, d, "a", nil); next == first || first.closed.Load() != 1 {
		t.Fatalf("a dead connection: reused %v, closed %d times", next == first, first.closed.Load())
	}
}

func TestIdleConnectionIsClosed(t *testing.T) {
	t.Parallel()
	p, d := newPool(time.Millisecond), &dialer{}
	c := use(t, p, d, "a", nil)
	waitFor(t, "the idle connection closed", func() bool { return c.closed.Load() == 1 })
	if p.Len() != 0 {
		t.Fatal("a closed connection is still pooled")
	}
	if next := use(t, p, d, "a", nil); next == c {
		t.Fatal("a closed connection was handed out")
	}
}

// A connection in use when it fails for one caller, or when the pool
// closes, is closed once, after its last user.
func TestInUseConnectionClosesAfterItsLastUser(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"failure", "close"} {
		p, d := newPool(time.Hour), &dialer{}
		holding, release := make(chan *conn), make(chan struct{})
		done := make(chan error)
		go func() {
			done <- p.Use(context.Background(), "a", d.dial, func(c *conn) error { holding <- c; <-release; return nil })
		}()
		c := <-holding
		if how == "failure" {
			use(t, p, d, "a", errors.New("boom"))
		} else {
			p.Close()
		}
		if c.closed.Load() != 0 {
			t.Fatalf("%s: closed while in use", how)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c.closed.Load() != 1 {
			t.Fatalf("%s: closed %d times after its last user", how, c.closed.Load())
		}
	}
}

func TestClosedPoolRefuses(t *testing.T) {
	t.Parallel()
	p, d := newPool(time.Hour), &dialer{}
	c := use(t, p, d, "a", nil)
	p.Close()
	if c.closed.Load() != 1 {
		t.Fatal("Close left a connection open")
	}
	if err := p.Use(context.Background(), "a", d.dial, func(*conn) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Use after Close: %v", err)
	}
}

// Many callers on few keys: every connection dialled is closed exactly
// once in the end, and no caller got a closed one (run with -race).
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	p, d := newPool(time.Microsecond), &dialer{}
	var wg sync.WaitGroup
	var usedClosed atomic.Int32
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				key := string(rune('a' + (g+i)%3))
				_ = p.Use(context.Background(), key, d.dial, func(c *conn) error {
					if c.closed.Load() != 0 {
						usedClosed.Add(1)
					}
					if i%17 == 0 {
						return errors.New("boom")
					}
					return nil
				})
			}
		}()
	}
	wg.Wait()
	p.Close()
	if usedClosed.Load() != 0 {
		t.Fatalf("%d uses got a closed connection", usedClosed.Load())
	}
	// An idle timer may be closing one as Close returns.
	waitFor(t, "every connection closed", func() bool {
		for _, c := range d.dialled() {
			if c.closed.Load() == 0 {
				return false
			}
		}
		return true
	})
	for _, c := range d.dialled() {
		if n := c.closed.Load(); n != 1 {
			t.Fatalf("connection %d closed %d times", c.id, n)
		}
	}
}
