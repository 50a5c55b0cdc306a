package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/triggers"
	"github.com/jobgate/jobgate/triggers/kafka"
	"github.com/jobgate/jobgate/triggers/sources"
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
	return triggertest.Decode(t, r.MsgBody, r.MsgBodyEncoding)
}

func TestSuite(t *testing.T) {
	t.Parallel()
	triggertest.Run(t, newBroker)
}

func TestCrash(t *testing.T) {
	t.Parallel()
	triggertest.Crash(t, "kafka (kfake)", newBroker, 2000, 10)
}

// sink records the bodies it is given, or refuses everything.
type sink struct {
	mu     sync.Mutex
	refuse bool
	calls  int
	bodies map[string]bool
}

func (s *sink) Submit(_ context.Context, req submit.Request) (submit.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.refuse {
		return submit.Result{}, fmt.Errorf("%w: refused by the test", submit.ErrUnavailable)
	}
	var ev struct {
		Records []struct{ Ckafka kafka.Record }
	}
	_ = json.Unmarshal(req.Event, &ev)
	for _, r := range ev.Records {
		s.bodies[r.Ckafka.MsgBody] = true
	}
	return submit.Result{Record: &record.Record{RequestId: req.RequestID}}, nil
}

func (s *sink) EventRoom(string) int                        { return 128 << 10 }
func (s *sink) Known(context.Context, string) (bool, error) { return false, nil }
func (s *sink) seen() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, len(s.bodies)
}

// "start: latest" is the end of the topic when the trigger first started,
// not at each start until the group's first commit: messages published
// after a new trigger started, which it could not queue before it was
// stopped, are delivered by its next start.
func TestLatestIsWhereTheTriggerFirstStarted(t *testing.T) {
	t.Parallel()
	b := newBroker(t, "").(*broker)
	topic := fmt.Sprintf("late-%d", topics.Add(1))
	if _, err := b.adm.CreateTopic(context.Background(), 2, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	brokers := make([]any, len(b.addrs))
	for i, a := range b.addrs {
		brokers[i] = a
	}
	redisAddr := testenv.Redis(t)
	cfg := &config.Config{Redis: config.Redis{Addr: redisAddr}, Worker: config.Worker{Node: "n"}, Functions: []config.Function{{Name: "fn", Image: "r/fn:1",
		Triggers: []config.Trigger{{Type: "kafka", Name: "k", Options: map[string]any{"brokers": brokers, "topic": topic, "group": "fresh", "start": "latest",
			"batch": map[string]any{"max": 10, "wait_ms": 100}}}}}}}
	if err := config.Complete(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	start := func(s *sink) triggers.Source {
		src, err := sources.One(sources.Deps{Config: cfg, Sink: s, Redis: rdb, Logger: testenv.Logger(t),
			DeadLetters: deadletter.NewStore(rdb, cfg.Redis.KeyPrefix(), deadletter.Limits{Retention: time.Hour, Max: 10})}, "fn", cfg.Functions[0].Triggers[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return src
	}
	first := &sink{refuse: true, bodies: map[string]bool{}}
	src := start(first)
	testenv.EventuallyNoError(t, 20*time.Second, "the first start connected", src.Health)
	var want []string
	for i := 0; i < 20; i++ {
		want = append(want, fmt.Sprintf("after-start-%d", i))
	}
	b.Produce(t, cfg.Functions[0].Triggers[0], want...)
	testenv.Eventually(t, 20*time.Second, "the first start to try", func() bool { calls, _ := first.seen(); return calls > 0 })
	if err := src.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := &sink{bodies: map[string]bool{}}
	src = start(second)
	defer src.Stop(context.Background())
	testenv.Eventually(t, 30*time.Second, "all 20 messages from the second start", func() bool { _, n := second.seen(); return n == len(want) })
}
