package natsjs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/triggers/natsjs"
	"github.com/jobgate/jobgate/triggers/triggertest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var streams atomic.Int64

// broker is the real nats-server, embedded, with JetStream on a temp dir.
type broker struct {
	url string
	js  jetstream.JetStream
}

func newBroker(t *testing.T, _ string) triggertest.Broker {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &broker{url: srv.ClientURL(), js: js}
}

func (b *broker) Kind() string { return "Nats" }

func (b *broker) Trigger(t *testing.T, name string, batchMax int) config.Trigger {
	n := streams.Add(1)
	stream := fmt.Sprintf("JOBS-%d", n)
	if _, err := b.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: stream, Subjects: []string{fmt.Sprintf("jobs.%d.>", n)}}); err != nil {
		t.Fatal(err)
	}
	return config.Trigger{Type: "nats", Name: name, Options: map[string]any{
		"url": b.url, "stream": stream, "subject": fmt.Sprintf("jobs.%d.>", n), "durable": "jobgate", "start": "earliest",
		"ack_wait_s": 5, "batch": map[string]any{"max": batchMax, "wait_ms": 200}}}
}

func (b *broker) Produce(t *testing.T, tr config.Trigger, bodies ...string) {
	subject := fmt.Sprintf("jobs.%s.orders", tr.Options["stream"].(string)[len("JOBS-"):])
	for _, body := range bodies {
		if _, err := b.js.Publish(context.Background(), subject, []byte(body)); err != nil {
			t.Errorf("publish: %v", err)
			return
		}
	}
}

func (b *broker) Unacked(t *testing.T, tr config.Trigger) int {
	stream := tr.Options["stream"].(string)
	c, err := b.js.Consumer(context.Background(), stream, "jobgate")
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		s, err := b.js.Stream(context.Background(), stream)
		if err != nil {
			t.Errorf("stream: %v", err)
			return -1
		}
		return int(s.CachedInfo().State.Msgs)
	}
	if err != nil {
		t.Errorf("consumer: %v", err)
		return -1
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Errorf("consumer info: %v", err)
		return -1
	}
	return info.NumAckPending + int(info.NumPending)
}

func (b *broker) Body(t *testing.T, el json.RawMessage) string {
	var r natsjs.Record
	if err := json.Unmarshal(el, &r); err != nil {
		t.Fatal(err)
	}
	if r.Sequence == 0 || r.Stream == "" || r.PublishTime == "" {
		t.Fatalf("record %+v", r)
	}
	return triggertest.Decode(t, r.MsgBody, r.MsgBodyEncoding)
}

func TestSuite(t *testing.T) {
	t.Parallel()
	triggertest.Run(t, newBroker)
}

func TestCrash(t *testing.T) {
	t.Parallel()
	triggertest.Crash(t, "nats", newBroker, 2000, 10)
}
