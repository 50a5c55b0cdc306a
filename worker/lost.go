package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/record"
)

// sweepLost ends the RUNNING instances of nodes that lost their lease
// (see nodeLease for the timing). Every worker runs it; a lock lets one
// sweep at a time.
func (w *Worker) sweepLost(ctx context.Context) {
	lost := time.Duration(w.config().Worker.NodeLostS) * time.Second
	every := max(lost/4, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mine, err := w.rdb.SetNX(ctx, w.keys.LostSweeperLock(), w.config().Worker.Node, every).Result()
		if err != nil || !mine {
			continue
		}
		if err := w.sweepLostOnce(ctx, lost); err != nil {
			w.log.Warn().Err(err).Msg("lost-node sweep")
		}
	}
}

func (w *Worker) sweepLostOnce(ctx context.Context, lost time.Duration) error {
	ids, err := w.records.Running(ctx)
	if err != nil {
		return err
	}
	now, err := w.rdb.Time(ctx).Result() // one clock for every worker's markers
	if err != nil {
		return err
	}
	alive := map[string]bool{}
	for _, id := range ids {
		rec, err := w.records.Get(ctx, id)
		if errors.Is(err, record.ErrNotFound) {
			_ = w.records.ForgetRunning(ctx, id)
			continue
		}
		if err != nil {
			return err
		}
		if (rec.Status != record.Running && rec.Status != record.Scheduling) || rec.Node == "" {
			continue
		}
		ok, seen := alive[rec.Node]
		if !seen {
			if ok, err = w.nodeAlive(ctx, rec.Node, now, lost); err != nil {
				return err
			}
			alive[rec.Node] = ok
		}
		switch {
		case ok:
		case rec.Status == record.Scheduling:
			w.releaseLost(ctx, rec)
		default:
			w.endLost(ctx, rec, now)
		}
	}
	return nil
}

// nodeAlive reports whether node holds its lease, or lost it less than
// lost ago (by the first time a sweeper saw it missing).
func (w *Worker) nodeAlive(ctx context.Context, node string, now time.Time, lost time.Duration) (bool, error) {
	n, err := w.rdb.Exists(ctx, w.keys.Node(node)).Result()
	if err != nil {
		return false, err
	}
	if n == 1 {
		return true, w.rdb.Del(ctx, w.keys.NodeLost(node)).Err()
	}
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	if err := w.rdb.SetNX(ctx, w.keys.NodeLost(node), ms, 0).Err(); err != nil {
		return false, err
	}
	first, err := w.rdb.Get(ctx, w.keys.NodeLost(node)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	return now.Sub(time.UnixMilli(first)) < lost, nil
}

// endLost ends an attempt whose node was lost: NodeLost (503), retried
// per its function's policy like a failed exit, dead-lettered when out of
// attempts. Its node fenced it before anyone could see its lease gone.
func (w *Worker) endLost(ctx context.Context, rec *record.Record, now time.Time) {
	a := w.newAttempt(rec.RequestId, rec.Attempt, rec.FunctionName)
	a.started = parseTime(rec.StartTime)
	if a.started.IsZero() {
		a.started = now
	}
	o := outcome{Status: record.Failed, StatusCode: record.CodeNodeLost, ExitCode: -1, EndTime: now,
		DurationMs: max(now.Sub(a.started).Milliseconds(), 0), MemoryMB: a.memMB,
		Message: fmt.Sprintf("NodeLost: worker %s lost its lease over worker.node_lost_s (%d s) ago; its instance is presumed stopped (it fences itself)", rec.Node, w.config().Worker.NodeLostS)}
	a.log.Warn().Str("lost_node", rec.Node).Msg("instance of a lost node ended as NodeLost")
	a.complete(ctx, o)
}

// releaseLost gives an attempt a lost node was scheduling (it holds the
// start claim) to the others: the claim is dropped and the record is
// PENDING again; its task comes back through asynq's lease recovery. The
// lost node cannot start it any more: it fenced itself, and a start
// writes the log's START line to Redis before containerd starts anything.
func (w *Worker) releaseLost(ctx context.Context, rec *record.Record) {
	msg := fmt.Sprintf("NodeLost: worker %s lost its lease while scheduling this attempt; another worker takes it", rec.Node)
	err := w.records.UpdateFrom(ctx, rec.RequestId, []record.Status{record.Scheduling}, record.Update{Status: record.Pending, Message: &msg})
	if err != nil {
		if !errors.Is(err, record.ErrStatus) {
			w.log.Warn().Err(err).Str("request_id", rec.RequestId).Msg("release an attempt of a lost node")
		}
		return
	}
	w.claims.release(ctx, record.InstanceID(rec.RequestId, rec.Attempt), rec.Node)
	w.log.Warn().Str("request_id", rec.RequestId).Str("lost_node", rec.Node).Msg("attempt a lost node was scheduling released to the others")
}
