package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/jobgate/jobgate/internal/cloudevent"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/connpool"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/triggers/kafka"
)

// A delivery to a message queue uses its target's pooled connection
// (targetConns): opened by the first delivery, shared by the ones that
// follow, closed after a minute unused or when a publish on it fails (the
// next delivery, or asynq's retry, connects afresh). Each publish carries
// the delivery's id (the task ID) for the receiver's dedupe; NATS
// JetStream and the Redis stream deduplicate it themselves.

// targetIdle is how long a queue target's connection stays open unused.
const targetIdle = time.Minute

// targetConns are the open connections to queue targets, one per
// broker address and credentials.
type targetConns struct {
	redis *connpool.Pool[*redis.Client]
	nats  *connpool.Pool[*nats.Conn]
	amqp  *connpool.Pool[*amqp.Connection]
	kafka *connpool.Pool[*kgo.Client]
}

func newTargetConns() *targetConns {
	return &targetConns{
		redis: connpool.New(targetIdle, nil, func(c *redis.Client) { _ = c.Close() }),
		nats:  connpool.New(targetIdle, func(c *nats.Conn) bool { return !c.IsClosed() }, (*nats.Conn).Close),
		amqp:  connpool.New(targetIdle, func(c *amqp.Connection) bool { return !c.IsClosed() }, func(c *amqp.Connection) { _ = c.Close() }),
		kafka: connpool.New(targetIdle, nil, (*kgo.Client).Close),
	}
}

// close closes them all (at the worker's stop).
func (c *targetConns) close() {
	c.redis.Close()
	c.nats.Close()
	c.amqp.Close()
	c.kafka.Close()
}

// publish sends body to a queue target.
func (w *Worker) publish(ctx context.Context, t config.Destination, id string, body []byte) error {
	switch {
	case t.RedisStream != nil:
		return w.toStream(ctx, *t.RedisStream, id, body)
	case t.NATS != nil:
		return w.toNATS(ctx, *t.NATS, id, body)
	case t.AMQP != nil:
		return w.toAMQP(ctx, *t.AMQP, id, body)
	case t.Kafka != nil:
		return w.toKafka(ctx, *t.Kafka, id, body)
	}
	return fmt.Errorf("destination %s: no target", t.Target())
}

// toStream adds the delivery to a Redis stream, once (DestinationXAdd):
// jobgate's own Redis, or the one at its addr.
func (w *Worker) toStream(ctx context.Context, t config.DestRedisStream, id string, body []byte) error {
	add := func(rdb redis.Scripter) error {
		err := keyspace.DestinationXAdd.Run(ctx, rdb, []string{t.Stream, keyspace.DestinationMark(t.Stream, id)},
			id, body, w.config().Retention().Milliseconds()).Err()
		if err != nil && !errors.Is(err, redis.Nil) { // Nil: added before
			return fmt.Errorf("XADD %s: %w", t.Stream, err)
		}
		return nil
	}
	if t.Addr == "" {
		return add(w.rdb)
	}
	dial := func(context.Context) (*redis.Client, error) {
		return redis.NewClient(&redis.Options{Addr: t.Addr, Password: os.Getenv(t.PasswordEnv)}), nil
	}
	return w.targets.redis.Use(ctx, t.Addr+"\x00"+t.PasswordEnv, dial, func(c *redis.Client) error { return add(c) })
}

// toNATS publishes to JetStream with the delivery as Nats-Msg-Id (the
// stream's duplicate window drops a repeat).
func (w *Worker) toNATS(ctx context.Context, t config.DestNATS, id string, body []byte) error {
	dial := func(context.Context) (*nats.Conn, error) {
		opts := []nats.Option{nats.Name("jobgate destination"), nats.Timeout(10 * time.Second)}
		if t.Credentials != "" {
			opts = append(opts, nats.UserCredentials(t.Credentials))
		}
		nc, err := nats.Connect(t.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("nats %s: %w", t.URL, err)
		}
		return nc, nil
	}
	return w.targets.nats.Use(ctx, t.URL+"\x00"+t.Credentials, dial, func(nc *nats.Conn) error {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("nats %s: %w", t.URL, err)
		}
		if _, err := js.Publish(ctx, t.Subject, body, jetstream.WithMsgID(id)); err != nil {
			return fmt.Errorf("nats publish %s: %w", t.Subject, err)
		}
		return nil
	})
}

// toAMQP publishes with publisher confirms, mandatory: a message no
// queue takes is a failed delivery, not a silent drop. Each delivery has
// its own channel on the target's shared connection (a channel's confirms
// and returns are its own).
func (w *Worker) toAMQP(ctx context.Context, t config.DestAMQP, id string, body []byte) error {
	url := t.URL
	if t.URLEnv != "" {
		url = os.Getenv(t.URLEnv)
	}
	dial := func(context.Context) (*amqp.Connection, error) {
		conn, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": "jobgate destination"}})
		if err != nil {
			return nil, fmt.Errorf("amqp: %w", err)
		}
		return conn, nil
	}
	return w.targets.amqp.Use(ctx, url, dial, func(conn *amqp.Connection) error {
		return publishAMQP(ctx, conn, t, id, body)
	})
}

func publishAMQP(ctx context.Context, conn *amqp.Connection, t config.DestAMQP, id string, body []byte) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("amqp confirms: %w", err)
	}
	returned := ch.NotifyReturn(make(chan amqp.Return, 1))
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, t.Exchange, t.RoutingKey, true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: id, Timestamp: time.Now(), Body: body,
	})
	if err != nil {
		return fmt.Errorf("amqp publish %s: %w", t.Exchange, err)
	}
	acked, err := conf.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("amqp confirm: %w", err)
	}
	// The broker sends a mandatory message's return before its ack.
	select {
	case r := <-returned:
		return fmt.Errorf("amqp %s/%s: returned unroutable (%d %s)", t.Exchange, t.RoutingKey, r.ReplyCode, r.ReplyText)
	default:
	}
	if !acked {
		return fmt.Errorf("amqp %s: the broker refused the message (nack)", t.Exchange)
	}
	return nil
}

// toKafka produces one record keyed by the delivery.
func (w *Worker) toKafka(ctx context.Context, t config.DestKafka, id string, body []byte) error {
	// The key is the connection's settings: brokers, SASL, TLS.
	key, err := json.Marshal(struct {
		B []string
		S *config.KafkaSASL
		T *config.TLS
	}{t.Brokers, t.SASL, t.TLS})
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	dial := func(context.Context) (*kgo.Client, error) {
		opts, err := kafka.ConnOpts(t.Brokers, t.SASL, t.TLS)
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		return cl, nil
	}
	return w.targets.kafka.Use(ctx, string(key), dial, func(cl *kgo.Client) error {
		rec := &kgo.Record{Topic: t.Topic, Key: []byte(id), Value: body, Headers: []kgo.RecordHeader{{Key: "jobgate-delivery", Value: []byte(id)}}}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return fmt.Errorf("kafka produce %s: %w", t.Topic, err)
		}
		return nil
	})
}

// cloudEventOf is the result as a CloudEvent 1.0: its id the delivery,
// its subject the RequestId.
func cloudEventOf(d queue.Destination, result []byte, end time.Time) (event.Event, error) {
	ev := event.New()
	ev.SetID(d.ID())
	ev.SetSource("/jobgate/functions/" + d.Function)
	kind := "failure"
	if d.Success {
		kind = "success"
	}
	ev.SetType("dev.jobgate.invocation." + kind)
	ev.SetSubject(d.RequestId)
	if !end.IsZero() {
		ev.SetTime(end)
	}
	if err := ev.SetData(event.ApplicationJSON, json.RawMessage(result)); err != nil {
		return ev, fmt.Errorf("cloudevent %s: %w", d.ID(), err)
	}
	return ev, ev.Validate()
}

// asCloudEvent writes the CloudEvent into req (binary mode) or returns it
// in the form the target takes: structured JSON for a queue, the "ce"
// event (what the invoke API makes of it) for a function.
func asCloudEvent(ctx context.Context, t config.Destination, d queue.Destination, result []byte, end time.Time, req *http.Request) ([]byte, error) {
	ev, err := cloudEventOf(d, result, end)
	if err != nil {
		return nil, err
	}
	switch {
	case req != nil:
		return nil, cehttp.WriteRequest(ctx, binding.ToMessage(&ev), req)
	case t.Function != "":
		h := http.Header{}
		r := &http.Request{Header: h}
		if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), r); err != nil {
			return nil, err
		}
		ce, err := cloudevent.Parse(ctx, r.Header, result)
		if err != nil {
			return nil, err
		}
		return ce.ObjectEvent()
	}
	return json.Marshal(ev)
}
