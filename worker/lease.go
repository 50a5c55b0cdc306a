package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/keyspace"
)

// nodeLease is a worker's claim to be alive: a Redis key that expires
// unless renewed. Timing, with lease_s = L (default 30 s):
//
//   - renewed every L/3;
//   - a worker that has not renewed for 2L/3 kills its own instances
//     (self-fencing, as Nomad's stop_after_client_disconnect and
//     Kubernetes' node leases do): cut off from Redis, it cannot report
//     them, and another worker is about to run them again;
//   - the key expires L after the last renewal;
//   - other workers end the node's RUNNING instances as NodeLost
//     node_lost_s (default 120 s) after first seeing the key missing, and
//     retry them per their function's policy.
//
// So a retry starts at least L/3 + node_lost_s after the partitioned
// worker fenced its instances: no attempt runs twice at once while the
// clocks of the hosts agree to within that margin.
type nodeLease struct {
	rdb   redis.UniversalClient
	keys  keyspace.Keys
	node  string
	ttl   time.Duration
	now   func() time.Time
	log   zerolog.Logger
	fence func(why string) // kills every instance of this worker
}

// run renews until ctx ends, fencing once per partition.
func (l *nodeLease) run(ctx context.Context) {
	renew := l.ttl / 3
	last, fenced := l.now(), false
	t := time.NewTicker(renew)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, renew)
		err := l.rdb.Set(rctx, l.keys.Node(l.node), l.now().UTC().Format(time.RFC3339), l.ttl).Err()
		cancel()
		switch {
		case err == nil:
			if fenced {
				l.log.Warn().Msg("node lease renewed again after a partition")
			}
			last, fenced = l.now(), false
		case ctx.Err() != nil:
			return
		case !fenced && l.now().Sub(last) >= 2*l.ttl/3:
			fenced = true
			why := fmt.Sprintf("NodeLost: the worker could not renew its lease for %s (lease_s %d): it stopped its instances so that their retry elsewhere cannot overlap them",
				l.now().Sub(last).Round(time.Second), int(l.ttl/time.Second))
			l.log.Error().Err(err).Msg("node lease lost: fencing (killing) this worker's instances")
			l.fence(why)
		default:
			l.log.Warn().Err(err).Dur("since_renewal", l.now().Sub(last)).Msg("node lease not renewed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fence asks every supervised attempt to stop at once (SIGKILL).
func (w *Worker) fence(why string) {
	for _, a := range w.runners.all() {
		select {
		case a.stopC <- stopRequest{fenced: why}:
		default:
			// A request is pending already: it stops the instance too,
			// if as a terminate.
		}
	}
}
