package worker

import (
	"context"
	"fmt"
	"time"
)

// A claim is a Redis key naming the node that may start an invocation. It
// is short-lived while scheduling (a crashed node's claim lapses) and kept
// for the retention once the instance has started.
const claimTTL = 10 * time.Minute

func (w *Worker) claimKey(id string) string { return w.config().Redis.Prefix + ":claim:" + id }

// claim reports whether this node may start id.
func (w *Worker) claim(ctx context.Context, id string) (bool, error) {
	ok, err := w.rdb.SetNX(ctx, w.claimKey(id), w.config().Worker.Node, claimTTL).Result()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", id, err)
	}
	if ok {
		return true, nil
	}
	owner, err := w.rdb.Get(ctx, w.claimKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", id, err)
	}
	return owner == w.config().Worker.Node, nil
}

func (w *Worker) keepClaim(ctx context.Context, id string) error {
	return w.rdb.Expire(ctx, w.claimKey(id), w.config().Retention()).Err()
}

func (w *Worker) unclaim(ctx context.Context, id string) {
	_ = w.rdb.Del(ctx, w.claimKey(id)).Err()
}
