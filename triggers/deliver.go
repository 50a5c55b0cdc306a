package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jobgate/jobgate/internal/metrics"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/submit"
)

// Source is a long-running event source (a broker consumer).
type Source interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	// Health is nil while the source is connected to its broker.
	Health() error
	// Name is "<function>/<trigger>".
	Name() string
}

// Message is one broker message, ready to be a Records[] element.
type Message struct {
	Partition string          // ordering domain ("" when the source has one)
	Key       string          // the message's position (offset, sequence, entry id): unique in Partition
	Record    json.RawMessage // the element's inner object, e.g. the Ckafka object
	Handle    any             // the adapter's own handle, for Ack
}

// Deliverer turns batches of messages into events for one trigger: it
// cuts batches within the function's event room, records each batch's
// extent before enqueueing it (so the same messages re-form the same batch
// — and the same RequestId — after a crash), dead-letters messages that
// cannot fit, and reports success only once the event is durably queued.
type Deliverer struct {
	Function, Trigger string
	Kind              string // the Records element key: Ckafka, Nats, Amqp, RedisStream
	Source            string // RequestSource
	Sink              Sink
	DeadLetters       *deadletter.Store
	Redis             redis.UniversalClient // jobgate's: batch journal, queue depth
	Prefix            string
	Retention         time.Duration
	MaxPending        int
	Log               zerolog.Logger
	Metrics           *metrics.Metrics // nil: none

	checked time.Time
	pending int
}

func (d *Deliverer) journalKey(partition, first string) string {
	return keyspace.New(d.Prefix).Batch(d.Function, d.Trigger, partition, first)
}

// memberKey maps a message to the first key of the batch it was queued in.
func (d *Deliverer) memberKey(partition, key string) string {
	return keyspace.New(d.Prefix).BatchMember(d.Function, d.Trigger, partition, key)
}

// Queued returns how many leading messages of msgs belong to a batch that
// was already queued (a crash came between the enqueue and acknowledging
// all of its messages, so the broker redelivers a tail of it): they only
// need their acknowledgement.
func (d *Deliverer) Queued(ctx context.Context, msgs []Message) (int, error) {
	keys := make([]string, len(msgs))
	for i, m := range msgs {
		keys[i] = d.memberKey(m.Partition, m.Key)
	}
	vals, err := d.Redis.MGet(ctx, keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("batch journal: %w", err)
	}
	first, _ := vals[0].(string)
	if first == "" || first == msgs[0].Key {
		return 0, nil // not queued, or a batch that starts here (Plan re-forms it)
	}
	n := 0
	for _, v := range vals {
		if s, _ := v.(string); s != first {
			break
		}
		n++
	}
	// Skip them only if that batch really reached the queue (its first
	// message may just be redelivered out of order).
	last, err := d.Redis.Get(ctx, d.journalKey(msgs[0].Partition, first)).Result()
	if err != nil {
		return 0, nil
	}
	known, err := d.Sink.Known(ctx, submit.DeriveRequestID(d.Kind, d.Function, d.Trigger, msgs[0].Partition, first, last))
	if err != nil || !known {
		return 0, err
	}
	return n, nil
}

// Plan returns how many of msgs (all of one partition, in order) form the
// next batch, at most max. It returns 0 when a journaled batch needs
// messages that have not arrived yet: fetch more and plan again.
func (d *Deliverer) Plan(ctx context.Context, msgs []Message, max int) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	key := d.journalKey(msgs[0].Partition, msgs[0].Key)
	last, err := d.Redis.Get(ctx, key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("batch journal: %w", err)
	}
	if err == nil { // re-form exactly the batch recorded before a crash
		for i, m := range msgs {
			if m.Key == last {
				return i + 1, nil
			}
		}
		return 0, nil
	}
	room := d.Sink.EventRoom(d.Function)
	n, size := 0, len(`{"Records":[]}`)
	for _, m := range msgs[:min(max, len(msgs))] {
		add := len(m.Record) + len(d.Kind) + 6 // {"Kind":…},
		if n > 0 && size+add > room {
			break
		}
		size += add
		n++
	}
	ok, err := d.Redis.SetNX(ctx, key, msgs[n-1].Key, d.Retention).Result()
	if err != nil {
		return 0, fmt.Errorf("batch journal: %w", err)
	}
	if ok {
		_, err := d.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, m := range msgs[:n] {
				p.Set(ctx, d.memberKey(m.Partition, m.Key), msgs[0].Key, d.Retention)
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("batch journal: %w", err)
		}
	}
	// Another replica may have journaled this batch first: honour it.
	if got, err := d.Redis.Get(ctx, key).Result(); err == nil && got != msgs[n-1].Key {
		return d.Plan(ctx, msgs, max)
	}
	return n, nil
}

// Event builds the {"Records":[…]} event of a batch.
func (d *Deliverer) Event(msgs []Message) ([]byte, error) {
	recs := make([]map[string]json.RawMessage, len(msgs))
	for i, m := range msgs {
		recs[i] = map[string]json.RawMessage{d.Kind: m.Record}
	}
	return json.Marshal(map[string]any{"Records": recs})
}

// RequestID of a batch: stable for the same messages.
func (d *Deliverer) RequestID(msgs []Message) string {
	return submit.DeriveRequestID(d.Kind, d.Function, d.Trigger, msgs[0].Partition, msgs[0].Key, msgs[len(msgs)-1].Key)
}

// Deliver submits one planned batch. nil means it is durably queued (or
// dead-lettered, for a message that can never fit): acknowledge it.
func (d *Deliverer) Deliver(ctx context.Context, msgs []Message) (string, error) {
	event, err := d.Event(msgs)
	if err != nil {
		return "", err
	}
	id := d.RequestID(msgs)
	res, err := d.Sink.Submit(ctx, submit.Request{Function: d.Function, Event: event, RequestID: id, Source: d.Source, TriggerName: d.Trigger})
	var lim *jobenv.LimitError
	if errors.As(err, &lim) && len(msgs) == 1 {
		// Never runs, never blocks the partition: dead-letter, then ack.
		derr := d.DeadLetters.Add(ctx, deadletter.Entry{
			RequestId: id, ErrorCode: 406, ErrorMessage: "message does not fit in an event: " + lim.Error(),
			Body: deadletter.Body{FunctionName: d.Function, Qualifier: "$LATEST", RequestSource: d.Source,
				ClientContext: string(event), PushTime: time.Now().UTC().Format(time.RFC3339Nano)},
		})
		if derr != nil {
			return id, fmt.Errorf("dead-letter oversize message: %w", derr)
		}
		d.Log.Warn().Str("request_id", id).Str("partition", msgs[0].Partition).Str("key", msgs[0].Key).Int("bytes", len(event)).Msg("oversize message dead-lettered")
		return id, nil
	}
	if err != nil {
		return id, err
	}
	if !res.Duplicate {
		d.pending++ // until the next look at the queue
		d.Log.Debug().Str("request_id", id).Int("messages", len(msgs)).Msg("batch queued")
	}
	return id, nil
}

// Backlogged reports whether jobgate's queue holds more pending tasks than
// MaxPending (looked up at most once a second, counting what this source
// queued since): sources stop fetching then. The bound is on the whole
// queue, which all functions share.
func (d *Deliverer) Backlogged() bool {
	if time.Since(d.checked) < time.Second {
		return d.pending > d.MaxPending
	}
	d.checked = time.Now()
	// asynq's pending list; Inspector.GetQueueInfo runs heavy Lua scripts
	// (and fails on v0.26 when a sampled task is gone: asynq#728).
	n, err := d.Redis.LLen(context.Background(), keyspace.AsynqPending(queue.Name)).Result()
	if err != nil {
		return false // Redis trouble: Submit will report it
	}
	d.pending = int(n)
	return d.pending > d.MaxPending
}
