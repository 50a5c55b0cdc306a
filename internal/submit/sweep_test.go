package submit_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type fixture struct {
	cfg     *config.Config
	rdb     *redis.Client
	records *record.Store
	sub     *submit.Submitter
	insp    *asynq.Inspector
	sweeper *submit.Sweeper
	skew    time.Duration // how far the sweeper's clock is ahead of Redis's
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	addr := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := &config.Config{Worker: config.Worker{Node: "n"}, Functions: []config.Function{{Name: "fn", Image: "r/fn:1"}}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	f := &fixture{cfg: cfg, rdb: rdb, records: record.NewStore(rdb, cfg.Redis.KeyPrefix(), cfg.Retention()), insp: asynq.NewInspectorFromRedisClient(rdb)}
	f.sub = submit.New(cfg, rdb, f.records, asynq.NewClientFromRedisClient(rdb))
	t.Cleanup(func() { f.sub.Close() })
	f.sweeper = &submit.Sweeper{Submitter: f.sub, Records: f.records, Tasks: f.insp, Redis: rdb, Keys: keyspace.New(cfg.Redis.KeyPrefix()),
		OrphanAfter: time.Minute, Log: zerolog.Nop(),
		Now: func(ctx context.Context) (time.Time, error) {
			now, err := rdb.Time(ctx).Result()
			return now.Add(f.skew), err
		}}
	return f
}

// sweep runs one sweep with the clock moved past the orphan window.
func (f *fixture) sweep(t *testing.T) int {
	t.Helper()
	f.skew += 2 * time.Minute
	n, err := f.sweeper.Sweep(context.Background())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	return n
}

func (f *fixture) taskState(t *testing.T, id string) asynq.TaskState {
	t.Helper()
	info, err := f.insp.GetTaskInfo(queue.Name, id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return info.State
}

// recordOnly is what a gateway leaves when it dies between recording an
// event and enqueueing its task.
func (f *fixture) recordOnly(t *testing.T, id string) {
	t.Helper()
	r := &record.Record{RequestId: id, FunctionName: "fn", Status: record.Pending, StatusCode: 202, Attempt: 1,
		EnqueueTime: time.Now().UTC().Format(record.TimeFormat)}
	if created, _, err := f.records.Create(context.Background(), r, []byte(`{}`)); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
}

// Gateway crash between record and enqueue (a timer instant with
// catchup none has no second chance): the orphan is queued again.
func TestSweepQueuesARecordWithoutATask(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.recordOnly(t, "orphan")
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, "orphan"); st != asynq.TaskStatePending {
		t.Fatalf("task state %v", st)
	}
	// Queued now: a second sweep leaves it alone.
	if n := f.sweep(t); n != 0 {
		t.Fatalf("second sweep requeued %d", n)
	}
}

// unreachableQueue is asynq's client while Redis is away (a fake of the
// Enqueuer seam only: the records are in the fixture's real Redis).
type unreachableQueue struct{}

func (unreachableQueue) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	return nil, errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
}

// A submission that finds its invocation recorded (a resend whose first
// send landed) is answered with it even if making sure of its task fails
// because Redis went away again: it exists, so "not queued" (503) would
// be untrue; the sweep queues its task.
func TestExistingInvocationIsNotRefusedWhenItsRequeueFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.recordOnly(t, "landed")
	sub := submit.New(f.cfg, f.rdb, f.records, unreachableQueue{})
	t.Cleanup(func() { sub.Close() })
	res, err := sub.Submit(context.Background(), submit.Request{Function: "fn", Event: []byte(`{}`), RequestID: "landed"})
	if err != nil || !res.Duplicate || res.Record.Status != record.Pending {
		t.Fatalf("resubmit: %+v %v", res, err)
	}
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, "landed"); st != asynq.TaskStatePending {
		t.Fatalf("task state %v", st)
	}
}

// A worker killed between recording attempt 2 as PENDING and queueing
// it: the sweep queues attempt 2 (task <id>-2).
func TestSweepQueuesALostRetry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{}`), RequestID: "retried"})
	if err != nil {
		t.Fatal(err)
	}
	two := 2
	err = f.records.Update(ctx, res.Record.RequestId, record.Update{Status: record.Pending, Attempt: &two, Message: record.Ptr("attempt 1 failed")})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, "retried-2"); st != asynq.TaskStatePending {
		t.Fatalf("attempt 2's task: %v", st)
	}
}

// An enqueue whose reply was lost: the task landed, the record was taken
// back, a worker dropped the task for want of a record, and the sender's
// retry (same RequestId) found the dead task's ID taken. The sweep frees
// the ID and queues the attempt.
func TestSweepReplacesADeadTask(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	task, opts, err := queue.NewInvokeTask(queue.Payload{RequestId: "lost", Function: "fn"}, queue.Options{MaxRetry: 1, Timeout: time.Minute, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(f.rdb).EnqueueContext(ctx, task, opts...); err != nil {
		t.Fatal(err)
	}
	// A worker that finds no record acknowledges (drops) the task.
	srv := asynq.NewServerFromRedisClient(f.rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{queue.Name: 1},
		TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the task dropped", func() bool {
		info, err := f.insp.GetTaskInfo(queue.Name, "lost")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
	srv.Shutdown()
	// The sender's retry: a new record, and the enqueue answers "already
	// queued" (the ID is taken), so it answers 202 for a task that is done.
	res, err := f.sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{}`), RequestID: "lost"})
	if err != nil || res.Duplicate {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, "lost"); st != asynq.TaskStatePending {
		t.Fatalf("task state %v, want pending again", st)
	}
}

// Invocations that are not orphans are left alone: queued, ended, gone.
func TestSweepLeavesTheLivingAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{}`), RequestID: "queued"}); err != nil {
		t.Fatal(err)
	}
	f.recordOnly(t, "ended")
	if err := f.records.Update(ctx, "ended", record.Update{Status: record.Finished}); err != nil {
		t.Fatal(err)
	}
	if n := f.sweep(t); n != 0 {
		t.Fatalf("requeued %d, want 0", n)
	}
	if _, err := f.insp.GetTaskInfo(queue.Name, "ended"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("an ended invocation got a task: %v", err)
	}
	// Not yet idle for the orphan window: not looked at.
	f.recordOnly(t, "fresh")
	f.skew = 0
	if n, err := f.sweeper.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("a fresh record was swept: %d %v", n, err)
	}
}

// A failover can keep a task in asynq's active list but drop its lease
// entry; asynq's recoverer only scans leases, so the task would stay
// active, and its PENDING record waiting, forever. The sweeper frees and
// requeues it — and leaves a task that runs under its lease alone. The
// active list and lease set names are pinned against a real asynq server.
func TestSweepReplacesAnActiveTaskWithoutALease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	for _, id := range []string{"leased", "unleased"} {
		f.recordOnly(t, id)
		if err := f.sub.Requeue(ctx, id, "fn", 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A real asynq server takes both and holds them (its handler blocks).
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(f.rdb, asynq.Config{Concurrency: 2, Queues: map[string]int{queue.Name: 1},
		TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	defer close(release)
	leased, unleased := record.InstanceID("leased", 1), record.InstanceID("unleased", 1)
	testenv.Eventually(t, 20*time.Second, "both tasks active, with leases", func() bool {
		active, _ := f.rdb.LRange(ctx, keyspace.AsynqActive(queue.Name), 0, -1).Result()
		n, _ := f.rdb.ZCard(ctx, keyspace.AsynqLease(queue.Name)).Result()
		return len(active) == 2 && n == 2
	})
	// What the failover left of one of them: active, no lease.
	if err := f.rdb.ZRem(ctx, keyspace.AsynqLease(queue.Name), unleased).Err(); err != nil {
		t.Fatal(err)
	}
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, unleased); st != asynq.TaskStatePending && st != asynq.TaskStateActive {
		t.Fatalf("unleased task: %v, want queued again", st)
	}
	if active, _ := f.rdb.LRange(ctx, keyspace.AsynqActive(queue.Name), 0, -1).Result(); !slices.Contains(active, leased) {
		t.Fatalf("the leased task was touched: active %v", active)
	}
}

// A task whose lease lapsed (its handler failed while Redis was away and
// asynq gave it up) is queued again by the sweeper, not two minutes
// later by asynq's recoverer.
func TestSweepReplacesAnActiveTaskWhoseLeaseLapsed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.recordOnly(t, "lapsed")
	id := record.InstanceID("lapsed", 1)
	if err := f.sub.Requeue(ctx, "lapsed", "fn", 1, 0); err != nil {
		t.Fatal(err)
	}
	// As asynq's dequeue leaves it, with a lease that ran out a minute ago.
	if err := f.rdb.LMove(ctx, keyspace.AsynqPending(queue.Name), keyspace.AsynqActive(queue.Name), "RIGHT", "LEFT").Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.HSet(ctx, keyspace.AsynqTask(queue.Name, id), "state", "active").Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.ZAdd(ctx, keyspace.AsynqLease(queue.Name), redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix()), Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	if st := f.taskState(t, id); st != asynq.TaskStateActive {
		t.Fatalf("set-up: task %v, want active", st)
	}
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, id); st != asynq.TaskStatePending {
		t.Fatalf("task %v, want pending again", st)
	}
}

// A fresh submission (written with its task, so in no pending set) whose
// first delivery broke before the worker wrote anything — its task left
// active, its lease gone with a failover — is queued again; one whose
// lease is alive is left alone.
func TestSweepReplacesAFreshSubmissionLeftActive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	var ids []string
	for range 2 {
		res, err := f.sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{}`), Source: "API"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Record.RequestId)
	}
	if n, err := f.rdb.ZCard(ctx, f.sweeper.Keys.Pending()).Result(); err != nil || n != 0 {
		t.Fatalf("pending set: %d %v, want empty (fresh submissions)", n, err)
	}
	// As asynq's dequeue leaves them: both active, one with a live lease.
	for _, id := range ids {
		if err := f.rdb.LMove(ctx, keyspace.AsynqPending(queue.Name), keyspace.AsynqActive(queue.Name), "RIGHT", "LEFT").Err(); err != nil {
			t.Fatal(err)
		}
		if err := f.rdb.HSet(ctx, keyspace.AsynqTask(queue.Name, record.InstanceID(id, 1)), "state", "active").Err(); err != nil {
			t.Fatal(err)
		}
	}
	alive := record.InstanceID(ids[1], 1)
	if err := f.rdb.ZAdd(ctx, keyspace.AsynqLease(queue.Name), redis.Z{Score: float64(time.Now().Add(time.Hour).Unix()), Member: alive}).Err(); err != nil {
		t.Fatal(err)
	}
	if n := f.sweep(t); n != 1 {
		t.Fatalf("requeued %d, want 1", n)
	}
	if st := f.taskState(t, record.InstanceID(ids[0], 1)); st != asynq.TaskStatePending {
		t.Fatalf("the unleased one: %v, want queued again", st)
	}
	if st := f.taskState(t, alive); st != asynq.TaskStateActive {
		t.Fatalf("the leased one: %v, want left active", st)
	}
}
