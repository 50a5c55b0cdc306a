// Package natsjs consumes a NATS JetStream stream with a durable pull
// consumer, turns messages into {"Records":[{"Nats":{…}}]} events, and
// acknowledges them only after the event is durably queued. AckWait is
// longer than the enqueue path; an unacknowledged message is redelivered
// with its stream sequence, hence its RequestId.
package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/triggers"
)

// Record is the event element.
type Record struct {
	Subject     string            `json:"subject"`
	Stream      string            `json:"stream"`
	Sequence    uint64            `json:"sequence"`
	MsgID       string            `json:"msgId"`
	PublishTime string            `json:"publishTime"`
	Headers     map[string]string `json:"headers"`
	MsgBody     string            `json:"msgBody"`
	// "base64" beside a body or header value that is not UTF-8 text.
	MsgBodyEncoding string            `json:"msgBodyEncoding,omitempty"`
	HeadersEncoding map[string]string `json:"headersEncoding,omitempty"`
}

// Source is one nats trigger.
type Source struct {
	triggers.Lifecycle
	d    *triggers.Deliverer
	o    config.QueueTrigger
	nc   *nats.Conn
	cons jetstream.Consumer
}

var _ triggers.Source = (*Source)(nil)

// New builds the source; it connects lazily (and reconnects) in its loop.
func New(d *triggers.Deliverer, o config.QueueTrigger) (*Source, error) {
	s := &Source{d: d, o: o}
	s.Init(d, func(ctx context.Context) {
		d.Pump(ctx, s, o.Batch.Max, time.Duration(o.Batch.WaitMs)*time.Millisecond, s.SetHealth)
	}, func() error {
		if s.nc != nil {
			s.nc.Close()
		}
		return nil
	})
	return s, nil
}

func (s *Source) connect(ctx context.Context) error {
	if s.cons != nil && s.nc != nil && s.nc.IsConnected() {
		return nil
	}
	if s.nc == nil {
		opts := []nats.Option{nats.Name("jobgate " + s.d.Function + "/" + s.d.Trigger), nats.MaxReconnects(-1)}
		if s.o.Credentials != "" {
			opts = append(opts, nats.UserCredentials(s.o.Credentials))
		}
		nc, err := nats.Connect(s.o.URL, opts...)
		if err != nil {
			return fmt.Errorf("connect %s: %w", triggers.RedactURL(s.o.URL), err) // never the password
		}
		s.nc = nc
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return err
	}
	deliver := jetstream.DeliverNewPolicy
	if s.o.Start == "earliest" {
		deliver = jetstream.DeliverAllPolicy
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, s.o.Stream, jetstream.ConsumerConfig{
		Durable: s.o.Durable, FilterSubject: s.o.Subject, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Duration(s.o.AckWaitS) * time.Second, DeliverPolicy: deliver,
		MaxAckPending: max(1000, 4*s.o.Batch.Max),
	})
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", s.o.Durable, s.o.Stream, err)
	}
	s.cons = cons
	return nil
}

// Fetch pulls up to max messages.
func (s *Source) Fetch(ctx context.Context, n int, wait time.Duration) ([]triggers.Message, error) {
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	batch, err := s.cons.Fetch(n, jetstream.FetchMaxWait(max(wait, 10*time.Millisecond)))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	var out []triggers.Message
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		raw := map[string][]byte{}
		for k, v := range m.Headers() {
			raw[k] = []byte(strings.Join(v, ", "))
		}
		hdr, hdrEnc := triggers.TextValues(raw)
		body, bodyEnc := triggers.Text(m.Data())
		rec, _ := json.Marshal(Record{
			Subject: m.Subject(), Stream: md.Stream, Sequence: md.Sequence.Stream, MsgID: m.Headers().Get(jetstream.MsgIDHeader),
			PublishTime: md.Timestamp.UTC().Format(time.RFC3339Nano), Headers: hdr, MsgBody: body,
			MsgBodyEncoding: bodyEnc, HeadersEncoding: hdrEnc,
		})
		out = append(out, triggers.Message{Key: strconv.FormatUint(md.Sequence.Stream, 10), Record: rec, Handle: m})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(out) == 0 {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return out, nil
}

// Ack acknowledges each message and waits for the server's confirmation.
func (s *Source) Ack(ctx context.Context, msgs []triggers.Message) error {
	var errs []error
	for _, m := range msgs {
		if err := m.Handle.(jetstream.Msg).DoubleAck(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
