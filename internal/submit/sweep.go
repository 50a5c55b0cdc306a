package submit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
)

// TaskInspector is the part of asynq.Inspector the sweeper needs.
type TaskInspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	DeleteTask(queue, id string) error
}

// Sweeper finds orphans — invocations PENDING with no live task — and
// enqueues them again. They come from crashes between writing a record
// PENDING and enqueueing its task: a gateway between record and enqueue
// (a timer instant with catchup none is not fired again), a worker
// between recording a retry and queueing it, or an enqueue whose reply
// was lost (the task landed, the record was taken back, the task dropped
// for want of a record, and a retry of the same key found the dead
// task's ID taken). The record scripts keep every PENDING invocation in a
// set scored by when it was last written; one sweeper at a time (a Redis
// lock) looks at those idle for OrphanAfter and asks asynq about each.
type Sweeper struct {
	Submitter   *Submitter
	Records     *record.Store
	Tasks       TaskInspector
	Redis       redis.UniversalClient
	Keys        keyspace.Keys
	OrphanAfter time.Duration
	Log         zerolog.Logger
	// Now is Redis's clock, the one the pending set's scores come from
	// (tests move it).
	Now func(ctx context.Context) (time.Time, error)
}

// Run sweeps every half OrphanAfter until ctx ends, whenever it holds the
// lock.
func (s *Sweeper) Run(ctx context.Context) {
	every := max(s.OrphanAfter/2, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mine, err := s.Redis.SetNX(ctx, s.Keys.SweeperLock(), "1", every).Result()
		if err != nil || !mine {
			continue
		}
		if n, err := s.Sweep(ctx); err != nil {
			s.Log.Warn().Err(err).Int("requeued", n).Msg("orphan sweep")
		}
	}
}

func (s *Sweeper) now(ctx context.Context) (time.Time, error) {
	if s.Now != nil {
		return s.Now(ctx)
	}
	return s.Redis.Time(ctx).Result()
}

// Sweep looks at every invocation PENDING and unwritten for OrphanAfter
// and enqueues the orphans again; it returns how many it enqueued.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	now, err := s.now(ctx)
	if err != nil {
		return 0, fmt.Errorf("redis time: %w", err)
	}
	requeued, err := s.sweepActive(ctx, now)
	if err != nil {
		return requeued, err
	}
	for {
		ids, err := s.Records.PendingSince(ctx, now.Add(-s.OrphanAfter), 100)
		if err != nil || len(ids) == 0 {
			return requeued, err
		}
		for _, id := range ids {
			orphan, err := s.check(ctx, id, now)
			if err != nil {
				return requeued, err
			}
			if orphan {
				requeued++
			}
		}
	}
}

// sweepActive looks at asynq's active invocation tasks whose lease has
// lapsed or is gone (their worker died, or lost Redis while its handler
// failed, or a failover dropped the lease) and whose invocation is still
// PENDING: a fresh submission is in no pending set (its task was written
// with it), so only this finds it when its first delivery broke before
// the worker wrote anything. Each goes through check, which frees the
// task (only if its lease really is gone, by Redis's clock) and queues
// the attempt again.
func (s *Sweeper) sweepActive(ctx context.Context, now time.Time) (int, error) {
	active, err := s.Redis.LRange(ctx, keyspace.AsynqActive(queue.Name), 0, -1).Result()
	if err != nil || len(active) == 0 {
		return 0, err
	}
	leases, err := s.Redis.ZMScore(ctx, keyspace.AsynqLease(queue.Name), active...).Result()
	if err != nil {
		return 0, fmt.Errorf("asynq leases: %w", err)
	}
	clock, err := s.Redis.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("redis time: %w", err)
	}
	requeued := 0
	for i, taskID := range active {
		if i < len(leases) && leases[i] >= float64(clock.Unix()) {
			continue // leased: its worker is on it
		}
		info, err := s.Tasks.GetTaskInfo(queue.Name, taskID)
		if err != nil || !queue.IsInvoke(info.Type) {
			continue // gone meanwhile, or a destination delivery (asynq's recoverer retries those)
		}
		p, err := queue.Decode(info.ID, asynq.NewTask(info.Type, info.Payload))
		if err != nil {
			continue
		}
		rec, err := s.Records.Get(ctx, p.RequestId)
		if err != nil || rec.Status != record.Pending || rec.Attempt != p.Attempt {
			continue
		}
		orphan, err := s.check(ctx, p.RequestId, now)
		if err != nil {
			return requeued, err
		}
		if orphan {
			requeued++
		}
	}
	return requeued, nil
}

// check enqueues id again if it is an orphan; either way it leaves the
// window (re-scored now, or out of the set).
func (s *Sweeper) check(ctx context.Context, id string, now time.Time) (bool, error) {
	rec, err := s.Records.Get(ctx, id)
	if errors.Is(err, record.ErrNotFound) || (err == nil && rec.Status != record.Pending) {
		return false, s.Records.TouchPending(ctx, id, now, false)
	}
	if err != nil {
		return false, err
	}
	taskID := record.InstanceID(id, rec.Attempt)
	info, err := s.Tasks.GetTaskInfo(queue.Name, taskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
	case err != nil:
		return false, fmt.Errorf("task %s: %w", taskID, err)
	case info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived:
		// Its task ended while the record waits: it was dropped. The
		// ID must be freed before the attempt can be queued again.
		if err := s.Tasks.DeleteTask(queue.Name, taskID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return false, fmt.Errorf("delete ended task %s: %w", taskID, err)
		}
	case info.State == asynq.TaskStateActive:
		// Active with its lease lapsed (asynq gave it up; its recoverer
		// retries it up to 2 minutes later) or without one (a failover
		// kept the task, not its lease, and the recoverer only scans
		// leases): freed and queued again here.
		n, err := keyspace.AsynqDropLapsed.Run(ctx, s.Redis, []string{keyspace.AsynqActive(queue.Name), keyspace.AsynqLease(queue.Name),
			keyspace.AsynqTask(queue.Name, taskID)}, taskID).Int()
		if err != nil {
			return false, fmt.Errorf("task %s: %w", taskID, err)
		}
		if n == 0 {
			return false, s.Records.TouchPending(ctx, id, now, true) // running under its lease: alive
		}
	default:
		return false, s.Records.TouchPending(ctx, id, now, true) // queued, retrying or running: alive
	}
	if err := s.Submitter.Requeue(ctx, id, rec.FunctionName, rec.Attempt, 0); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, err
	}
	s.Log.Warn().Str("request_id", id).Str("function", rec.FunctionName).Int("attempt", rec.Attempt).
		Str("enqueued", rec.EnqueueTime).Msg("orphaned PENDING invocation (no live task) queued again")
	return true, s.Records.TouchPending(ctx, id, now, true)
}
