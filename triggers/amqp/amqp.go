// Package amqp consumes a RabbitMQ (AMQP 0-9-1) queue with amqp091-go:
// manual acknowledgement after the event is durably queued, a prefetch
// window, and reconnection with backoff. Events are
// {"Records":[{"Amqp":{…}}]}.
//
// The RequestId of a message comes from its message_id. Without one,
// jobgate cannot recognise a redelivery: a message redelivered after a
// crash between enqueue and ack then runs twice (at-least-once). Set
// message_id on the producer for exactly-once starts.
package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/triggers"
)

// Record is the event element.
type Record struct {
	Exchange    string            `json:"exchange"`
	RoutingKey  string            `json:"routingKey"`
	Queue       string            `json:"queue"`
	MessageID   string            `json:"messageId"`
	PublishTime string            `json:"publishTime"`
	Headers     map[string]string `json:"headers"`
	MsgBody     string            `json:"msgBody"`
	// "base64" beside a body or header value that is not UTF-8 text.
	MsgBodyEncoding string            `json:"msgBodyEncoding,omitempty"`
	HeadersEncoding map[string]string `json:"headersEncoding,omitempty"`
}

// Source is one amqp trigger.
type Source struct {
	triggers.Lifecycle
	d          *triggers.Deliverer
	o          config.QueueTrigger
	url        string
	conn       *amqp.Connection
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
}

var _ triggers.Source = (*Source)(nil)

// New builds the source; it connects in its loop (and reconnects).
func New(d *triggers.Deliverer, o config.QueueTrigger) (*Source, error) {
	url := o.URL
	if o.URLEnv != "" {
		url = os.Getenv(o.URLEnv)
	}
	s := &Source{d: d, o: o, url: url}
	s.Init(d, func(ctx context.Context) {
		d.Pump(ctx, s, o.Batch.Max, time.Duration(o.Batch.WaitMs)*time.Millisecond, s.SetHealth)
	}, func() error {
		if s.conn != nil {
			return s.conn.Close() // unacknowledged deliveries go back to the queue
		}
		return nil
	})
	return s, nil
}

func (s *Source) connect() error {
	if s.conn != nil && !s.conn.IsClosed() && s.ch != nil && !s.ch.IsClosed() {
		return nil
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
	conn, err := amqp.DialConfig(s.url, amqp.Config{Properties: amqp.Table{"connection_name": "jobgate " + s.d.Function + "/" + s.d.Trigger}})
	if err != nil {
		return fmt.Errorf("connect: %w", err) // the URL may hold a password: not echoed
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return fmt.Errorf("channel: %w", err)
	}
	if err := ch.Qos(s.o.Prefetch, 0, false); err != nil {
		conn.Close()
		return fmt.Errorf("qos: %w", err)
	}
	dels, err := ch.Consume(s.o.Queue, "", false, false, false, false, nil)
	if err != nil {
		conn.Close()
		return fmt.Errorf("consume %s: %w", s.o.Queue, err)
	}
	s.conn, s.ch, s.deliveries = conn, ch, dels
	return nil
}

// Fetch takes up to n deliveries, waiting at most wait for the first.
func (s *Source) Fetch(ctx context.Context, n int, wait time.Duration) ([]triggers.Message, error) {
	if err := s.connect(); err != nil {
		return nil, err
	}
	var out []triggers.Message
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(out) < n {
		select {
		case <-ctx.Done():
			return out, nil
		case <-timer.C:
			return out, nil
		case d, ok := <-s.deliveries:
			if !ok {
				if len(out) > 0 {
					return out, nil
				}
				return nil, errors.New("channel closed by the broker")
			}
			out = append(out, s.message(d))
			if len(out) == 1 { // after the first, take only what is already there
				timer.Reset(time.Millisecond)
			}
		}
	}
	return out, nil
}

// Ack acknowledges each delivery.
func (s *Source) Ack(_ context.Context, msgs []triggers.Message) error {
	var errs []error
	for _, m := range msgs {
		if err := m.Handle.(amqp.Delivery).Ack(false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Source) message(d amqp.Delivery) triggers.Message {
	raw := map[string][]byte{}
	for k, v := range d.Headers {
		switch v := v.(type) {
		case []byte: // AMQP byte arrays
			raw[k] = v
		case string:
			raw[k] = []byte(v)
		default:
			raw[k] = []byte(fmt.Sprint(v))
		}
	}
	hdr, hdrEnc := triggers.TextValues(raw)
	body, bodyEnc := triggers.Text(d.Body)
	ts := ""
	if !d.Timestamp.IsZero() {
		ts = d.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	rec, _ := json.Marshal(Record{Exchange: d.Exchange, RoutingKey: d.RoutingKey, Queue: s.o.Queue, MessageID: d.MessageId,
		PublishTime: ts, Headers: hdr, MsgBody: body, MsgBodyEncoding: bodyEnc, HeadersEncoding: hdrEnc})
	key := d.MessageId
	if key == "" {
		key = "random:" + uuid.NewString() // see the package doc
	}
	return triggers.Message{Key: key, Record: rec, Handle: d}
}
