package submit

import (
	"context"
	"errors"
	"fmt"
	"net"
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
// trip of keyspace.Submit scripts (each one event's record and task, or
// a batch's, atomic on its own). A submission that finds fewer than
// maxFlushes flushes in flight starts one at once, so a lone request
// pays no waiting window. Nothing is answered before Redis answered its
// own script, or before it is certain the script was never sent.

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
	// set by the flush before done is closed
	results []int64
	err     error
	// uncertain: a connection broke after the script may have been sent,
	// so it may have run.
	uncertain bool
	done      chan struct{}
}

// committer coalesces writes into flushes (see above).
type committer struct {
	rdb redis.UniversalClient
	// wait bounds the retries of a write that was never sent (Redis
	// refused connections): then it is answered ErrUnavailable, and
	// nothing of it exists.
	wait time.Duration
	// uncertainWait bounds the retries of a write that may have run:
	// answering ErrUnavailable then could be untrue, so it waits longer
	// for Redis to say (a resend is idempotent), and after that cancel
	// takes it back.
	uncertainWait time.Duration
	cancel        func(w *write)

	mu       sync.Mutex
	waiting  []*write
	inflight int
}

// commit runs w in the next flush and returns when it has an outcome.
func (c *committer) commit(w *write) {
	c.mu.Lock()
	c.waiting = append(c.waiting, w)
	if c.inflight < maxFlushes {
		c.inflight++
		go c.flushWaiting()
	}
	c.mu.Unlock()
	<-w.done
}

// flushWaiting flushes what waits until nothing does.
func (c *committer) flushWaiting() {
	for {
		c.mu.Lock()
		if len(c.waiting) == 0 {
			c.inflight--
			c.mu.Unlock()
			return
		}
		n := min(len(c.waiting), maxFlushOps)
		batch := c.waiting[:n:n]
		c.waiting = c.waiting[n:]
		c.mu.Unlock()
		c.flush(batch)
	}
}

// flush sends batch as one pipeline and answers each write (closes its
// done) once it has an outcome. Writes whose connection broke are sent
// again (the scripts are idempotent by RequestId) within their bounds.
func (c *committer) flush(batch []*write) {
	ctx := context.Background() // each write is answered; none is abandoned half-way
	start := time.Now()
	pending := batch
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, 250*time.Millisecond) {
		var keep []*write
		for _, w := range c.send(ctx, pending) {
			limit := c.wait
			if w.uncertain {
				limit = c.uncertainWait
			}
			if time.Since(start)+delay < limit {
				keep = append(keep, w)
				continue
			}
			if w.uncertain && c.cancel != nil {
				c.cancel(w)
			}
			close(w.done)
		}
		if len(keep) == 0 {
			return
		}
		time.Sleep(delay)
		pending = keep
	}
}

// send runs one round trip carrying the whole batch as one Submit
// script call (one script call per event would cost Redis more than the
// writes themselves), answers the writes if Redis answered, and returns
// them (with err set) if the connection broke.
func (c *committer) send(ctx context.Context, batch []*write) (broken []*write) {
	keys, args := batch[0].keys, batch[0].args
	if len(batch) > 1 {
		keys, args = nil, append([]any(nil), batch[0].args[:3]...) // now, ttl, oldest: the first's
		for _, w := range batch {
			keys = append(keys, w.keys...)
			args = append(args, w.args[3:]...)
		}
	}
	var cmd *redis.Cmd
	// The command's own error is looked at below.
	_, _ = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, keyspace.AsynqQueues, queue.Name)
		cmd = keyspace.Submit.EvalSha(ctx, p, keys, args...)
		return nil
	})
	err := cmd.Err()
	if isNoScript(err) {
		// First use on this Redis (or after a restart emptied its script
		// cache): load it and send again.
		if lerr := keyspace.Submit.Load(ctx, c.rdb).Err(); lerr == nil {
			return c.send(ctx, batch)
		}
	}
	var results []int64
	if err == nil {
		results, err = cmd.Int64Slice()
	}
	if err != nil && !isRedisError(err) {
		for _, w := range batch {
			w.err, w.uncertain = err, w.uncertain || !neverSent(err)
		}
		return batch
	}
	for _, w := range batch {
		switch n := len(w.tasks); {
		case err != nil:
			w.err = err
		case len(results) < n:
			w.err = fmt.Errorf("submit script answered %d results for %d invocations", len(results), n)
		default:
			w.results, results = results[:n], results[n:]
		}
		close(w.done)
	}
	return nil
}

// neverSent: the command did not leave this process (no connection).
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed)
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
		done: make(chan struct{}),
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
			for end, delay := time.Now().Add(time.Hour), 100*time.Millisecond; time.Now().Before(end); delay = min(2*delay, time.Second) {
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
