package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
)

// A claim is a Redis key naming the node that may start an attempt. It is
// short-lived while scheduling (a crashed node's claim lapses) and kept
// for the retention once the instance has started.
const claimTTL = 10 * time.Minute

// claims takes and keeps start claims for one node.
type claims struct {
	rdb       redis.UniversalClient
	keys      keyspace.Keys
	node      string
	retention time.Duration
}

// take reports whether this node may start instance id.
func (c *claims) take(ctx context.Context, id string) (bool, error) {
	ok, err := c.rdb.SetNX(ctx, c.keys.Claim(id), c.node, claimTTL).Result()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", id, err)
	}
	if ok {
		return true, nil
	}
	owner, err := c.rdb.Get(ctx, c.keys.Claim(id)).Result()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", id, err)
	}
	return owner == c.node, nil
}

// keep holds the claim for the retention: the attempt has started.
func (c *claims) keep(ctx context.Context, id string) error {
	return c.rdb.Expire(ctx, c.keys.Claim(id), c.retention).Err()
}

// drop gives the claim up: the attempt did not start here.
func (c *claims) drop(ctx context.Context, id string) {
	_ = c.rdb.Del(ctx, c.keys.Claim(id)).Err()
}

// release gives up a claim held by node (this one, or a lost one), and
// leaves one another node holds.
func (c *claims) release(ctx context.Context, id, node string) {
	_ = keyspace.ClaimRelease.Run(ctx, c.rdb, []string{c.keys.Claim(id)}, node).Err()
}
