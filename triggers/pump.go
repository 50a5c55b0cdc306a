package triggers

import (
	"context"
	"sort"
	"time"
)

// Fetcher is what an adapter gives the shared consume loop.
type Fetcher interface {
	// Fetch returns up to max messages, waiting at most wait for the
	// first; in order within each partition.
	Fetch(ctx context.Context, max int, wait time.Duration) ([]Message, error)
	// Ack acknowledges messages whose event is durably queued.
	Ack(ctx context.Context, msgs []Message) error
}

type partitionBuf struct {
	msgs    []Message
	firstAt time.Time
}

// Pump is the consume loop every adapter shares: fetch, buffer per
// partition, cut batches (full, or batch wait elapsed), deliver, and only
// then acknowledge. A failed delivery is retried with backoff and never
// acknowledged; fetching pauses while jobgate's queue is backlogged.
func (d *Deliverer) Pump(ctx context.Context, f Fetcher, batchMax int, wait time.Duration, health func(error)) {
	bufs := map[string]*partitionBuf{}
	pause := func(attempt int) {
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)):
		}
	}
	failures := 0
	for ctx.Err() == nil {
		if d.Backlogged() {
			pause(3)
			continue
		}
		fetchWait, buffered := wait, 0
		for _, b := range bufs {
			buffered += len(b.msgs)
			if len(b.msgs) > 0 {
				fetchWait = min(fetchWait, max(time.Until(b.firstAt.Add(wait)), time.Millisecond))
			}
		}
		got, err := f.Fetch(ctx, max(batchMax-buffered, 1), fetchWait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			health(err)
			d.Log.Warn().Err(err).Msg("fetch failed; retrying")
			pause(failures)
			continue
		}
		health(nil)
		failures = 0
		for _, m := range got {
			b := bufs[m.Partition]
			if b == nil {
				b = &partitionBuf{}
				bufs[m.Partition] = b
			}
			if len(b.msgs) == 0 {
				b.firstAt = time.Now()
			}
			b.msgs = append(b.msgs, m)
		}
		parts := make([]string, 0, len(bufs))
		for p := range bufs {
			parts = append(parts, p)
		}
		sort.Strings(parts)
		for _, p := range parts {
			if !d.drain(ctx, f, bufs[p], batchMax, wait) {
				pause(1)
			}
		}
	}
}

// drain delivers the partition's ready batches; false on a failure.
func (d *Deliverer) drain(ctx context.Context, f Fetcher, b *partitionBuf, batchMax int, wait time.Duration) bool {
	for len(b.msgs) > 0 && (len(b.msgs) >= batchMax || time.Since(b.firstAt) >= wait) {
		if n, err := d.Queued(ctx, b.msgs); err != nil {
			d.Log.Warn().Err(err).Msg("batch journal")
			return false
		} else if n > 0 {
			// The tail of a batch queued before a crash: acknowledge only.
			if err := f.Ack(ctx, b.msgs[:n]); err != nil {
				d.Log.Warn().Err(err).Msg("ack failed: the broker will redeliver")
			}
			b.msgs = b.msgs[n:]
			continue
		}
		n, err := d.Plan(ctx, b.msgs, batchMax)
		if err != nil {
			d.Log.Warn().Err(err).Msg("plan batch")
			return false
		}
		if n == 0 {
			return true // a journaled batch wants more messages: fetch on
		}
		if _, err := d.Deliver(ctx, b.msgs[:n]); err != nil {
			if ctx.Err() == nil {
				d.Log.Warn().Err(err).Int("messages", n).Msg("batch not queued; not acknowledged, retrying")
			}
			return false
		}
		if err := f.Ack(ctx, b.msgs[:n]); err != nil {
			d.Log.Warn().Err(err).Msg("ack failed: the broker will redeliver (same RequestId, no second run)")
		} else if d.Metrics != nil {
			d.Metrics.TriggerMessages.WithLabelValues(d.Function, d.Trigger).Add(float64(n))
			d.Metrics.TriggerDelivery.WithLabelValues(d.Function, d.Trigger).Observe(time.Since(b.firstAt).Seconds())
		}
		b.msgs = b.msgs[n:]
		b.firstAt = time.Now()
	}
	return true
}
