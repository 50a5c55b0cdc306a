package submit

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// handOver is how many seconds before its time a delayed invocation's
// task is due in asynq: time for the worker to pull and create first.
const handOver = 3

// asynq's keys of jobgate's queue, which every submission names.
var (
	pendingKey   = keyspace.AsynqPending(queue.Name)
	scheduledKey = keyspace.AsynqScheduled(queue.Name)
)

// write is one keyspace.Submit script (one event, or a batch's), waiting
// for its flush.
type write struct {
	keys []string
	args []any
	// tasks and members are each invocation's task id and index member
	// (for SubmitCancel).
	tasks, members []string
	// fresh: every RequestId is a new random UUID (see send); recs and
	// encoded are each invocation's writes for that path.
	fresh   bool
	recs    []record.CreateOp
	encoded []queue.Encoded
	due     []int64 // Unix seconds, 0 = now
	hidden  []bool  // queued as scheduled until replicas confirm (committer.hideUntil)
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
	cancel        func(w *write, only []int)
	// replicas > 0: a flush is answered only once that many replicas
	// confirmed it (WAIT, on the connection that wrote it, bounded by
	// replicaTimeout); writes they did not confirm are answered
	// ErrUnavailable and taken back (cancel).
	replicas       int
	replicaTimeout time.Duration

	mu       sync.Mutex
	waiting  []*write
	inflight int

	tidyMu   sync.Mutex
	lastTidy time.Time
}

// tidyEvery is how often a flush also makes sure asynq lists jobgate's
// queue and trims the listing indexes past retention: both need doing
// now and then, not with every write (three commands fewer per flush,
// one round trip fewer on Redis Cluster).
const tidyEvery = time.Second

// tidyDue says this flush is the one to tidy.
func (c *committer) tidyDue(now time.Time) bool {
	c.tidyMu.Lock()
	defer c.tidyMu.Unlock()
	if now.Sub(c.lastTidy) < tidyEvery {
		return false
	}
	c.lastTidy = now
	return true
}

// commit runs w in the next flush and returns when it has an outcome.
// With a flush slot free, the caller flushes itself (no hand-off to
// another goroutine: a lone request pays no scheduling); once its own
// write is answered, a goroutine takes over what waits meanwhile.
func (c *committer) commit(w *write) {
	c.mu.Lock()
	c.waiting = append(c.waiting, w)
	if c.inflight >= maxFlushes {
		c.mu.Unlock()
		<-w.done
		return
	}
	c.inflight++
	c.mu.Unlock()
	for !answered(w) {
		batch := c.next()
		if batch == nil {
			// Taken by a flush that broke: answered by its resend.
			<-w.done
			return
		}
		c.flush(batch)
	}
	c.mu.Lock()
	more := len(c.waiting) > 0
	if !more {
		c.inflight--
	}
	c.mu.Unlock()
	if more {
		go c.flushWaiting() // keeps this flush slot
	}
}

// answered says w has its outcome.
func answered(w *write) bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// next takes the next flush's writes, or gives up the caller's flush
// slot (nil) when nothing waits.
func (c *committer) next() []*write {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiting) == 0 {
		c.inflight--
		return nil
	}
	n := min(len(c.waiting), maxFlushOps)
	batch := c.waiting[:n:n]
	c.waiting = c.waiting[n:]
	return batch
}

// flushWaiting flushes what waits until nothing does.
func (c *committer) flushWaiting() {
	for batch := c.next(); batch != nil; batch = c.next() {
		c.flush(batch)
	}
}

// flush sends batch as one round trip and answers each write (closes
// its done) once it has an outcome. Writes whose connection broke are
// sent again (idempotently: see send) within their bounds, by a
// goroutine of their own, so that the flushers go on with new writes
// (which, while Redis stays away, are refused after c.wait).
func (c *committer) flush(batch []*write) {
	start := time.Now()
	if broken := c.send(context.Background(), batch); len(broken) > 0 {
		go c.resend(broken, start)
	}
}

// resend retries broken writes until Redis answers or their bound
// (c.wait, or c.uncertainWait for a write that may have run) has passed.
func (c *committer) resend(pending []*write, start time.Time) {
	ctx := context.Background() // each write is answered; none is abandoned half-way
	for delay := 20 * time.Millisecond; len(pending) > 0; delay = min(2*delay, 250*time.Millisecond) {
		var keep []*write
		for _, w := range pending {
			limit := c.wait
			if w.uncertain {
				limit = c.uncertainWait
			}
			if time.Since(start)+delay < limit {
				keep = append(keep, w)
				continue
			}
			if w.uncertain && c.cancel != nil {
				c.cancel(w, nil)
			}
			close(w.done)
		}
		if len(keep) == 0 {
			return
		}
		time.Sleep(delay)
		pending = c.send(ctx, keep)
	}
}

// send runs one round trip: a MULTI/EXEC transaction holding the fresh
// writes as plain commands (their RequestIds are new random UUIDs, so
// nothing can exist to check for: no script needed, which halves Redis's
// work per event) and the others as one Submit script call (per event,
// a script call would cost Redis more than the writes). It answers the
// writes if Redis answered, and returns them (with err set) if the
// connection broke: they are sent again through the script, which finds
// what already landed.
func (c *committer) send(ctx context.Context, batch []*write) (broken []*write) {
	var fresh, scripted []*write
	for _, w := range batch {
		if w.fresh {
			fresh = append(fresh, w)
		} else {
			scripted = append(scripted, w)
		}
	}
	freshCmds := make([][]redis.Cmder, len(fresh))
	var shared []redis.Cmder // commands all fresh writes share
	var script *redis.Cmd
	var on redis.Cmdable = c.rdb
	var conn *redis.Conn
	if c.replicas > 0 {
		// WAIT counts the replicas that have this connection's writes.
		// On Redis Cluster every key written here shares asynq's queue's
		// slot (keyspace.ClusterPrefix): the connection is to its master.
		var err error
		if conn, err = c.stickyConn(ctx); err != nil {
			for _, w := range batch {
				w.err = err
			}
			return batch
		}
		defer conn.Close()
		on = conn
	}
	// asynq's queue set is in a slot of its own on Redis Cluster: not
	// part of the transaction there (it need only exist).
	_, clustered := c.rdb.(*redis.ClusterClient)
	tidy := c.tidyDue(time.Now())
	if clustered && tidy {
		if err := c.rdb.SAdd(ctx, keyspace.AsynqQueues, queue.Name).Err(); err != nil {
			for _, w := range batch {
				w.err = err
			}
			return batch
		}
	}
	_, err := on.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if !clustered && tidy {
			p.SAdd(ctx, keyspace.AsynqQueues, queue.Name)
		}
		// Each invocation's own keys, then what the flush's fresh writes
		// share as one variadic command per key (index entries, the
		// pending list, the scheduled set): fewer commands, less Redis
		// work per event.
		var (
			indexes   = map[string][]redis.Z{}
			trims     = map[string]string{}
			pending   []any
			scheduled []redis.Z
		)
		for i, w := range fresh {
			for j, rec := range w.recs {
				task, ttl := w.encoded[j], time.Duration(rec.TTLms)*time.Millisecond
				freshCmds[i] = append(freshCmds[i],
					p.HSet(ctx, rec.Keys[0], rec.Fields...),
					p.PExpire(ctx, rec.Keys[0], ttl),
					p.Set(ctx, rec.Keys[1], rec.Event, ttl))
				for _, idx := range rec.Keys[2:4] {
					indexes[idx] = append(indexes[idx], redis.Z{Member: rec.Member})
					trims[idx] = rec.Oldest
				}
				// As asynq's enqueue (or schedule) script writes a task.
				if at := w.due[j]; at == 0 {
					freshCmds[i] = append(freshCmds[i],
						p.HSet(ctx, keyspace.AsynqTask(queue.Name, task.ID), "msg", task.Message, "state", "pending", "pending_since", w.args[0]))
					pending = append(pending, task.ID)
				} else {
					freshCmds[i] = append(freshCmds[i],
						p.HSet(ctx, keyspace.AsynqTask(queue.Name, task.ID), "msg", task.Message, "state", "scheduled"))
					scheduled = append(scheduled, redis.Z{Score: float64(at), Member: task.ID})
				}
			}
		}
		for key, members := range indexes {
			shared = append(shared, p.ZAdd(ctx, key, members...))
		}
		if len(pending) > 0 {
			// LPUSH of many is as many LPUSHes in order: asynq takes
			// the first-written first.
			shared = append(shared, p.LPush(ctx, pendingKey, pending...))
		}
		if len(scheduled) > 0 {
			shared = append(shared, p.ZAdd(ctx, scheduledKey, scheduled...))
		}
		for key, oldest := range trims {
			if tidy {
				p.ZRemRangeByLex(ctx, key, "-", "("+oldest)
			}
		}
		if len(scripted) > 0 {
			for _, w := range scripted {
				w.script()
			}
			keys, args := scripted[0].keys, scripted[0].args
			if len(scripted) > 1 {
				keys, args = nil, append([]any(nil), scripted[0].args[:3]...) // now, ttl, oldest: the first's
				for _, w := range scripted {
					keys = append(keys, w.keys...)
					args = append(args, w.args[3:]...)
				}
			}
			// EVAL, not EVALSHA: inside MULTI a missing script would
			// fail only this command, after the others ran.
			script = keyspace.Submit.Eval(ctx, p, keys, args...)
		}
		return nil
	})
	if err != nil && clustered {
		// The sticky connection bypasses the Cluster client's own
		// redirect handling: a failover or a moved slot shows up here.
		c.rdb.(*redis.ClusterClient).ReloadState(ctx)
	}
	if err != nil && (!isRedisError(err) || notRun(err, clustered)) {
		for _, w := range batch {
			w.err, w.uncertain = err, w.uncertain || !neverSent(err) && !notRun(err, clustered)
			w.fresh = false // a resend checks what landed
		}
		return batch
	}
	var sharedErr error
	for _, cmd := range shared {
		if sharedErr = cmd.Err(); sharedErr != nil {
			break
		}
	}
	for i, w := range fresh {
		w.err = sharedErr
		for _, cmd := range freshCmds[i] {
			if w.err != nil {
				break
			}
			w.err = cmd.Err()
		}
		if w.err == nil {
			w.results = make([]int64, len(w.recs))
			for j := range w.results {
				w.results[j] = 1
			}
		}
	}
	var results []int64
	if script != nil {
		if err = script.Err(); err == nil {
			results, err = script.Int64Slice()
		}
	}
	for _, w := range scripted {
		switch n := len(w.tasks); {
		case err != nil:
			w.err = err
		case len(results) < n:
			w.err = fmt.Errorf("submit script answered %d results for %d invocations", len(results), n)
		default:
			// An earlier attempt's error is over: this one was answered.
			w.err, w.results, results = nil, results[:n], results[n:]
		}
	}
	if conn != nil && c.confirmReplicated(ctx, conn, batch) {
		c.promote(ctx, conn, batch)
	}
	for _, w := range batch {
		close(w.done)
	}
	return nil
}

// ErrNotReplicated: a write landed on the master, but fewer replicas
// than redis.wait_replicas confirmed it in time; it was taken back.
var ErrNotReplicated = errors.New("not confirmed by enough replicas")

// confirmReplicated waits for c.replicas to have conn's writes. If fewer
// confirm in time, the invocations the batch created are answered
// ErrNotReplicated and taken back: a failover now could lose them, and
// the sender, told 503, sends again.
func (c *committer) confirmReplicated(ctx context.Context, conn *redis.Conn, batch []*write) bool {
	n, err := conn.Wait(ctx, c.replicas, c.replicaTimeout).Result()
	if err == nil && n >= int64(c.replicas) {
		return true
	}
	why := fmt.Errorf("%w: %d of %d within %s", ErrNotReplicated, n, c.replicas, c.replicaTimeout)
	if err != nil {
		why = fmt.Errorf("%w: wait: %w", ErrNotReplicated, err)
	}
	for _, w := range batch {
		if w.err != nil {
			continue
		}
		var created []int
		for i, r := range w.results {
			if r == 1 {
				created = append(created, i)
			}
		}
		if w.err = why; len(created) > 0 && c.cancel != nil {
			c.cancel(w, created)
		}
	}
	return false
}

// hideUntil is when a task written now is due if it waits for replicas
// (zero if it does not): later than any answer to WAIT, and than a
// failover lasts (a refused write that reached the replica must be taken
// back from the new master before it is due), so that no worker takes a
// task that may yet be refused. Confirmed, it is promoted at once; if the
// promotion is lost, asynq forwards it then.
func (c *committer) hideUntil(now time.Time) time.Time {
	if c.replicas == 0 {
		return time.Time{}
	}
	return now.Add(c.replicaTimeout + c.uncertainWait)
}

// promote makes the confirmed tasks the batch created hidden pending now.
func (c *committer) promote(ctx context.Context, conn *redis.Conn, batch []*write) {
	_, _ = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, w := range batch {
			if w.err != nil {
				continue
			}
			for i, r := range w.results {
				if r == 1 && w.hidden[i] {
					keyspace.TaskPromote.Eval(ctx, p, []string{keyspace.AsynqScheduled(queue.Name), keyspace.AsynqPending(queue.Name),
						keyspace.AsynqTask(queue.Name, w.tasks[i])}, w.tasks[i], time.Now().UnixNano())
				}
			}
		}
		return nil
	})
}

// neverSent: the command did not leave this process (no connection).
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed)
}

// notRun says Redis refused a transaction as a whole for the moment —
// still loading its data after a restart, a replica or a master in a
// failover, or (Cluster) a slot elsewhere or on the move — so none of it
// ran: it is sent again (on a Cluster once the slot map is reloaded).
// Answered as an error instead, a write sent before a crash, which may
// have landed, would be refused though it exists.
func notRun(err error, clustered bool) bool {
	if redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsClusterDownError(err) {
		return true
	}
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return clustered && (moved || ask || redis.IsExecAbortError(err))
}

// isRedisError: Redis answered with an error (the script did not run);
// anything else (I/O, timeouts, a closed pool) leaves the outcome open.
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}

// newWrite starts a keyspace.Submit script for invocations sharing ttl
// and oldest (one Store's); add appends each.
func newWrite(now time.Time, ttl int64, oldest string, n int, fresh bool) *write {
	return &write{
		done: make(chan struct{}), fresh: fresh,
		args: append(make([]any, 0, 3), now.UnixNano(), ttl, oldest),
		// sized for n: add appends without regrowing
		tasks: make([]string, 0, n), members: make([]string, 0, n),
		recs: make([]record.CreateOp, 0, n), encoded: make([]queue.Encoded, 0, n),
		due: make([]int64, 0, n), hidden: make([]bool, 0, n),
	}
}

// add appends one invocation: its record's creation and its first task,
// due at once (zero due) or at due (asynq's scheduled set). A task due at
// once is written as due at hide instead when hide is set, and promoted
// once replicas confirmed it (committer.hideUntil).
func (w *write) add(rec record.CreateOp, task queue.Encoded, due, hide time.Time) {
	hidden := due.IsZero() && !hide.IsZero()
	if hidden {
		due = hide
	}
	w.hidden = append(w.hidden, hidden)
	at := int64(0) // 0: pending at once
	switch {
	case hidden:
		at = due.Unix()
	case !due.IsZero():
		// asynq forwards a task once the Unix second it is scored with
		// has begun. A delayed one is scored handOver before its own:
		// the worker gets it 3–4 s early, pulls and creates meanwhile
		// (seconds on a loaded host), and starts the instance at the
		// time (worker: attempt.waitDue).
		at = due.Unix() - handOver
	}
	w.tasks = append(w.tasks, task.ID)
	w.members = append(w.members, rec.Member)
	w.recs = append(w.recs, rec)
	w.encoded = append(w.encoded, task)
	w.due = append(w.due, at)
}

// script fills the keys and arguments of the keyspace.Submit call that
// writes w: for a write that is not fresh, or a fresh one sent again
// (send). Built only then: a fresh write goes as plain commands.
func (w *write) script() {
	if len(w.keys) > 0 {
		return
	}
	w.keys = make([]string, 0, 7*len(w.recs))
	for j, rec := range w.recs {
		queued := pendingKey
		if w.due[j] != 0 {
			queued = scheduledKey
		}
		w.keys = append(w.keys, rec.Keys...)
		w.keys = append(w.keys, keyspace.AsynqTask(queue.Name, w.tasks[j]), queued)
		w.args = append(w.args, w.tasks[j], w.encoded[j].Message, rec.Member, rec.Event, w.due[j], rec.TTLms, len(rec.Fields))
		w.args = append(w.args, rec.Fields...)
	}
}

// cancelLater keeps trying, in the background, to take back a write the
// sender was told failed (503) though it may have landed, until Redis
// answers (or for an hour, or until the client is closed). A task a
// worker already took is left to run.
func cancelLater(rdb redis.UniversalClient, w *write, only []int) {
	if only == nil {
		for i := range w.tasks {
			only = append(only, i)
		}
	}
	w.script()
	go func() {
		ctx := context.Background()
		for _, i := range only {
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

// stickyConn is one connection to the master that holds the queue.
func (c *committer) stickyConn(ctx context.Context) (*redis.Conn, error) {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, keyspace.AsynqPending(queue.Name))
		if err != nil {
			return nil, fmt.Errorf("find the queue's master: %w", err)
		}
		return m.Conn(), nil
	}
	return c.rdb.(interface{ Conn() *redis.Conn }).Conn(), nil
}
