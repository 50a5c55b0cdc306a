package submit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
)

// Group commit. Concurrent submissions are coalesced: while a flush is
// in flight the next ones gather, then go out as one pipelined round
// trip of keyspace.Submit scripts (each one event's record and task,
// atomic on its own). A submission that finds no flush in flight leads
// one at once, so a lone request pays no waiting window. Nothing is
// answered before Redis answered its own script.

const (
	// maxFlushes is how many flushes may be in flight at once: two keep
	// Redis busy while the previous answers are read.
	maxFlushes = 2
	// maxFlushOps bounds one round trip.
	maxFlushOps = 256
)

// write is one keyspace.Submit script (one event, or a batch's), waiting
// for its flush.
type write struct {
	keys []string
	args []any
	// tasks and members are each invocation's task id and index member
	// (for SubmitCancel).
	tasks, members []string
	// set by the flush
	results []int64
	err     error
	// uncertain: the connection broke after the script was sent, so it
	// may have run.
	uncertain bool
	wake      chan struct{}
	leader    bool
}

// committer coalesces writes into flushes (see above).
type committer struct {
	rdb redis.UniversalClient
	// wait is how long a flush whose connection broke keeps retrying
	// before its writes are answered ErrUnavailable.
	wait time.Duration
	// cancel takes back writes answered ErrUnavailable that may have
	// landed (see cancelLater).
	cancel func(w *write)

	mu       sync.Mutex
	waiting  []*write
	inflight int
}

// commit runs w in the next flush and returns when it has an outcome.
func (c *committer) commit(w *write) {
	w.wake = make(chan struct{})
	c.mu.Lock()
	c.waiting = append(c.waiting, w)
	if c.inflight >= maxFlushes {
		c.mu.Unlock()
		<-w.wake
		if !w.leader {
			return
		}
	} else {
		c.inflight++
		c.mu.Unlock()
	}
	// Lead: flush what is waiting (w included), then hand the lead to
	// the first of those that came meanwhile, or step down.
	c.mu.Lock()
	n := min(len(c.waiting), maxFlushOps)
	batch := c.waiting[:n:n]
	c.waiting = c.waiting[n:]
	c.mu.Unlock()
	c.flush(batch)
	c.mu.Lock()
	if len(c.waiting) > 0 {
		next := c.waiting[0]
		next.leader = true
		close(next.wake)
	} else {
		c.inflight--
	}
	c.mu.Unlock()
	for _, b := range batch {
		if b != w {
			close(b.wake)
		}
	}
}

// flush sends batch as one pipeline and records each script's outcome.
// A broken connection is retried (the scripts are idempotent by
// RequestId) until c.wait runs out.
func (c *committer) flush(batch []*write) {
	ctx := context.Background() // each write is answered; none is abandoned half-way
	deadline := time.Now().Add(c.wait)
	pending := batch
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		broken := c.send(ctx, pending)
		if len(broken) == 0 {
			return
		}
		if time.Now().Add(delay).After(deadline) {
			for _, w := range broken {
				if w.uncertain && c.cancel != nil {
					c.cancel(w)
				}
			}
			return
		}
		time.Sleep(delay)
		pending = broken
	}
}

// send runs one round trip and returns the writes whose outcome is
// unknown (connection errors), with w.err set.
func (c *committer) send(ctx context.Context, batch []*write) (broken []*write) {
	cmds := make([]*redis.Cmd, len(batch))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, keyspace.AsynqQueues, queue.Name)
		for i, w := range batch {
			cmds[i] = keyspace.Submit.EvalSha(ctx, p, w.keys, w.args...)
		}
		return nil
	})
	if err != nil && isNoScript(err) {
		// First use on this Redis (or after a restart without the script
		// cache): load it and send again.
		if lerr := keyspace.Submit.Load(ctx, c.rdb).Err(); lerr == nil {
			return c.send(ctx, batch)
		}
	}
	for i, w := range batch {
		cerr := cmds[i].Err()
		if cerr == nil {
			w.results, w.err = cmds[i].Int64Slice()
			if w.err == nil && len(w.results) != len(w.tasks) {
				w.err = fmt.Errorf("submit script answered %d results for %d invocations", len(w.results), len(w.tasks))
			}
			continue
		}
		w.err = cerr
		if !isRedisError(cerr) {
			// Sent (perhaps) and no answer: it may have run.
			w.uncertain = true
			broken = append(broken, w)
		}
	}
	return broken
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }

// isRedisError: Redis answered with an error (the script did not run);
// anything else (I/O, timeouts, a closed pool) leaves the outcome open.
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

// newWrite starts a keyspace.Submit script for invocations sharing ttl
// and oldest (one Store's); add appends each.
func newWrite(now time.Time, ttl int64, oldest string, n int) *write {
	return &write{
		keys: make([]string, 0, 7*n),
		args: append(make([]any, 0, 3+12*n), now.UnixNano(), ttl, oldest),
	}
}

// add appends one invocation: its record's creation and its first task.
func (w *write) add(rec record.CreateOp, task queue.Encoded) {
	w.keys = append(w.keys, rec.Keys...)
	w.keys = append(w.keys, keyspace.AsynqTask(queue.Name, task.ID), keyspace.AsynqPending(queue.Name))
	w.args = append(w.args, task.ID, task.Message, rec.Member, rec.Event, len(rec.Fields))
	w.args = append(w.args, rec.Fields...)
	w.tasks = append(w.tasks, task.ID)
	w.members = append(w.members, rec.Member)
}

// cancelLater keeps trying, in the background, to take back a write the
// sender was told failed (503) though it may have landed, until Redis
// answers (or for an hour, or until the client is closed). A task a
// worker already took is left to run.
func cancelLater(rdb redis.UniversalClient, w *write) {
	go func() {
		ctx := context.Background()
		for i := range w.tasks {
			keys := w.keys[7*i : 7*i+7]
			for end, delay := time.Now().Add(time.Hour), 100*time.Millisecond; time.Now().Before(end); delay = min(2*delay, 10*time.Second) {
				err := keyspace.SubmitCancel.Run(ctx, rdb, keys, w.tasks[i], w.members[i]).Err()
				if errors.Is(err, redis.ErrClosed) {
					return
				}
				if err == nil || isRedisError(err) {
					break
				}
				time.Sleep(delay)
			}
		}
	}()
}
