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
}

// Source is one kafka trigger.
type Source struct {
	triggers.Lifecycle
	d  *triggers.Deliverer
	o  config.QueueTrigger
	cl *kgo.Client
}

var _ triggers.Source = (*Source)(nil)

// New builds the client (it connects lazily).
func New(d *triggers.Deliverer, o config.QueueTrigger) (*Source, error) {
	reset := kgo.NewOffset().AtEnd()
	if o.Start == "earliest" {
		reset = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topic),
		kgo.DisableAutoCommit(), // committed after the enqueue only
		kgo.ConsumeResetOffset(reset),
		kgo.ClientID("jobgate"),
		// A SIGKILLed member's partitions move on after this (Kafka's old
		// default; franz-go's is 45 s).
		kgo.SessionTimeout(10 * time.Second),
	}
	if o.SASL != nil {
		pass := os.Getenv(o.SASL.PasswordEnv)
		switch o.SASL.Mechanism {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: o.SASL.Username, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: o.SASL.Username, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: o.SASL.Username, Pass: pass}.AsSha512Mechanism()))
		}
	}
	if o.TLS != nil && o.TLS.Enabled {
		tc := &tls.Config{InsecureSkipVerify: o.TLS.InsecureSkipVerify} //nolint:gosec // the operator's choice, documented
		if o.TLS.CAFile != "" {
			pem, err := os.ReadFile(o.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka %s/%s: ca_file: %w", d.Function, d.Trigger, err)
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka %s/%s: %w", d.Function, d.Trigger, err)
	}
	s := &Source{d: d, o: o, cl: cl}
	s.Init(d, func(ctx context.Context) {
		d.Pump(ctx, s, o.Batch.Max, time.Duration(o.Batch.WaitMs)*time.Millisecond, s.SetHealth)
	}, func() error { s.cl.Close(); return nil })
	return s, nil
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
		rec, _ := json.Marshal(Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, MsgKey: string(r.Key), MsgBody: string(r.Value)})
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
