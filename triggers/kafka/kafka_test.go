package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/triggers/kafka"
	"github.com/jobgate/jobgate/triggers/triggertest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var topics atomic.Int64

// broker is franz-go's kfake: a Kafka cluster in the test process that
// speaks the Kafka wire protocol (no real Kafka can be installed here).
type broker struct {
	addrs []string
	cl    *kgo.Client
	adm   *kadm.Client
}

func newBroker(t *testing.T, _ string) triggertest.Broker {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation(), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &broker{addrs: c.ListenAddrs(), cl: cl, adm: kadm.NewClient(cl)}
}

func (b *broker) Kind() string { return "Ckafka" }

func (b *broker) Trigger(t *testing.T, name string, batchMax int) config.Trigger {
	brokers := make([]any, len(b.addrs))
	for i, a := range b.addrs {
		brokers[i] = a
	}
	return config.Trigger{Type: "kafka", Name: name, Options: map[string]any{
		"brokers": brokers, "topic": fmt.Sprintf("orders-%d", topics.Add(1)), "group": "jobgate", "start": "earliest",
		"batch": map[string]any{"max": batchMax, "wait_ms": 200}}}
}

func (b *broker) Produce(t *testing.T, tr config.Trigger, bodies ...string) {
	rs := make([]*kgo.Record, len(bodies))
	for i, body := range bodies {
		rs[i] = &kgo.Record{Topic: tr.Options["topic"].(string), Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(body)}
	}
	if err := b.cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Errorf("produce: %v", err)
	}
}

// Unacked is the group's lag: end offsets minus committed offsets.
func (b *broker) Unacked(t *testing.T, tr config.Trigger) int {
	topic := tr.Options["topic"].(string)
	ends, err := b.adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Errorf("end offsets: %v", err)
		return -1
	}
	committed, err := b.adm.FetchOffsets(context.Background(), "jobgate")
	if err != nil {
		t.Errorf("committed offsets: %v", err)
		return -1
	}
	lag := 0
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(topic, o.Partition)
		start := int64(0)
		if ok && c.At >= 0 {
			start = c.At
		}
		lag += int(o.Offset - start)
	})
	return lag
}

func (b *broker) Body(t *testing.T, el json.RawMessage) string {
	var r kafka.Record
	if err := json.Unmarshal(el, &r); err != nil {
		t.Fatal(err)
	}
	if r.Topic == "" || r.Offset < 0 || r.MsgKey == "" {
		t.Fatalf("record %+v", r)
	}
	return r.MsgBody
}

func TestSuite(t *testing.T) {
	t.Parallel()
	triggertest.Run(t, newBroker)
}

func TestCrash(t *testing.T) {
	t.Parallel()
	triggertest.Crash(t, "kafka (kfake)", newBroker, 2000, 10)
}
