// Package kafka consumes a Kafka topic in a consumer group with franz-go
// and turns batches into SCF's CKafka event
// {"Records":[{"Ckafka":{"topic","partition","offset","msgKey","msgBody"}}]}:
// in order per partition, offsets committed only after the batch is
// queued, and each batch's offset range journaled before it is enqueued
// so the same batch (and RequestId) is re-formed after a crash.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/triggers"
)

// Record is the event element (SCF's CKafka message).
type Record struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	MsgKey    string `json:"msgKey"`
	MsgBody   string `json:"msgBody"`
	// "base64" when the key or body is not UTF-8 text (absent otherwise).
	MsgKeyEncoding  string `json:"msgKeyEncoding,omitempty"`
	MsgBodyEncoding string `json:"msgBodyEncoding,omitempty"`
}

// Source is one kafka trigger.
type Source struct {
	triggers.Lifecycle
	d    *triggers.Deliverer
	o    config.QueueTrigger
	opts []kgo.Opt   // the connection's, without the consumer group's
	cl   *kgo.Client // the group consumer, made once the start is pinned
}

var _ triggers.Source = (*Source)(nil)

// New builds the client (it connects lazily).
func New(d *triggers.Deliverer, o config.QueueTrigger) (*Source, error) {
	reset := kgo.NewOffset().AtEnd()
	if o.Start == "earliest" {
		reset = kgo.NewOffset().AtStart()
	}
	opts, err := ConnOpts(o.Brokers, o.SASL, o.TLS)
	if err != nil {
		return nil, fmt.Errorf("kafka %s/%s: %w", d.Function, d.Trigger, err)
	}
	s := &Source{d: d, o: o, opts: opts}
	consumer := append(append([]kgo.Opt{}, opts...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topic),
		kgo.DisableAutoCommit(), // committed after the enqueue only
		kgo.ConsumeResetOffset(reset),
		// A SIGKILLed member's partitions move on after this (Kafka's old
		// default; franz-go's is 45 s).
		kgo.SessionTimeout(10*time.Second),
	)
	// Checked now, so a bad option is a start error, not a loop's.
	probe, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka %s/%s: %w", d.Function, d.Trigger, err)
	}
	probe.Close()
	s.Init(d, func(ctx context.Context) {
		if err := s.connect(ctx, consumer); err != nil {
			return // stopped before it could connect
		}
		d.Pump(ctx, s, o.Batch.Max, time.Duration(o.Batch.WaitMs)*time.Millisecond, s.SetHealth)
	}, func() error {
		if s.cl != nil {
			s.cl.Close()
		}
		return nil
	})
	return s, nil
}

// connect pins the group's start, then makes the consumer; it retries
// (reporting the failure as the source's health) until it succeeds or
// ctx ends.
func (s *Source) connect(ctx context.Context, consumer []kgo.Opt) error {
	for {
		err := s.pinStart(ctx)
		if err == nil {
			if s.cl, err = kgo.NewClient(consumer...); err == nil {
				return nil
			}
		}
		s.SetHealth(fmt.Errorf("kafka %s: %w", s.o.Topic, err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// pinStart makes "latest" mean the end of the topic when the trigger
// first started: a group with no committed offset for the topic gets the
// end offsets committed before it consumes. Otherwise Kafka resolves
// "latest" at the group's first fetch, and again after every restart
// until its first commit: a trigger restarted before it committed would
// skip everything published since it was deployed. ("earliest" needs no
// pin: it resolves to the same place every time.) The topic must exist.
func (s *Source) pinStart(ctx context.Context) error {
	if s.o.Start == "earliest" {
		return nil
	}
	cl, err := kgo.NewClient(s.opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsets(ctx, s.o.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) { // a new group (kfake says so; Kafka answers empty)
		return fmt.Errorf("committed offsets of group %s: %w", s.o.Group, err)
	}
	if len(committed[s.o.Topic]) > 0 {
		return nil // pinned before (or consuming since)
	}
	ends, err := adm.ListEndOffsets(ctx, s.o.Topic)
	if err != nil {
		return fmt.Errorf("end offsets: %w", err)
	}
	pin := kadm.Offsets{}
	var missing error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			missing = o.Err
			return
		}
		pin.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
	})
	if missing != nil || len(pin) == 0 {
		return fmt.Errorf("topic %s not ready: %v", s.o.Topic, missing)
	}
	res, err := adm.CommitOffsets(ctx, s.o.Group, pin)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		return fmt.Errorf("pin the start of group %s: %w", s.o.Group, err)
	}
	s.d.Log.Info().Str("topic", s.o.Topic).Str("group", s.o.Group).Msg("new consumer group: start pinned at the topic's end (start: latest)")
	return nil
}

// Fetch polls up to n records, waiting at most wait.
func (s *Source) Fetch(ctx context.Context, n int, wait time.Duration) ([]triggers.Message, error) {
	pctx, cancel := context.WithTimeout(ctx, max(wait, 10*time.Millisecond))
	defer cancel()
	fs := s.cl.PollRecords(pctx, n)
	if fs.IsClientClosed() {
		return nil, errors.New("kafka client closed")
	}
	var errs []error
	fs.EachError(func(topic string, p int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", topic, p, err))
		}
	})
	var out []triggers.Message
	fs.EachRecord(func(r *kgo.Record) {
		key, keyEnc := triggers.Text(r.Key)
		body, bodyEnc := triggers.Text(r.Value)
		rec, _ := json.Marshal(Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, MsgKey: key, MsgBody: body,
			MsgKeyEncoding: keyEnc, MsgBodyEncoding: bodyEnc})
		out = append(out, triggers.Message{Partition: strconv.Itoa(int(r.Partition)), Key: strconv.FormatInt(r.Offset, 10), Record: rec, Handle: r})
	})
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Ack commits the offsets after the batch.
func (s *Source) Ack(ctx context.Context, msgs []triggers.Message) error {
	rs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		rs[i] = m.Handle.(*kgo.Record)
	}
	return s.cl.CommitRecords(ctx, rs...)
}

// ConnOpts are a client's connection options: the seed brokers, SASL (its
// password from the environment) and TLS. Destinations use them too.
func ConnOpts(brokers []string, sasl *config.KafkaSASL, t *config.TLS) ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ClientID("jobgate")}
	if sasl != nil {
		pass := os.Getenv(sasl.PasswordEnv)
		switch sasl.Mechanism {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: sasl.Username, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: sasl.Username, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: sasl.Username, Pass: pass}.AsSha512Mechanism()))
		}
	}
	if t != nil && t.Enabled {
		tc := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // the operator's choice, documented
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	return opts, nil
}
