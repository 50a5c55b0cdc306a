package redisstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/triggers/redisstream"
	"github.com/jobgate/jobgate/triggers/triggertest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var streams atomic.Int64

// broker: the stream lives in jobgate's own Redis (the trigger's default).
type broker struct{ rdb *redis.Client }

func newBroker(t *testing.T, redisAddr string) triggertest.Broker {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	return &broker{rdb: rdb}
}

func (b *broker) Kind() string { return "RedisStream" }

func (b *broker) Trigger(t *testing.T, name string, batchMax int) config.Trigger {
	return config.Trigger{Type: "redis_stream", Name: name, Options: map[string]any{
		"stream": fmt.Sprintf("jobs-%d", streams.Add(1)), "group": "jobgate", "start": "earliest",
		"batch": map[string]any{"max": batchMax, "wait_ms": 200}}}
}

func (b *broker) Produce(t *testing.T, tr config.Trigger, bodies ...string) {
	p := b.rdb.Pipeline()
	for _, body := range bodies {
		p.XAdd(context.Background(), &redis.XAddArgs{Stream: tr.Options["stream"].(string), Values: map[string]any{"body": body}})
	}
	if _, err := p.Exec(context.Background()); err != nil {
		t.Errorf("XADD: %v", err)
	}
}

func (b *broker) Unacked(t *testing.T, tr config.Trigger) int {
	stream := tr.Options["stream"].(string)
	groups, err := b.rdb.XInfoGroups(context.Background(), stream).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return 0
		}
		t.Errorf("XINFO GROUPS: %v", err)
		return -1
	}
	for _, g := range groups {
		if g.Name == "jobgate" {
			return int(g.Pending + g.Lag)
		}
	}
	n, _ := b.rdb.XLen(context.Background(), stream).Result()
	return int(n)
}

func (b *broker) Body(t *testing.T, el json.RawMessage) string {
	var r redisstream.Record
	if err := json.Unmarshal(el, &r); err != nil {
		t.Fatal(err)
	}
	if r.Group != "jobgate" || !strings.HasPrefix(r.Stream, "jobs-") || r.ID == "" {
		t.Fatalf("record %+v", r)
	}
	return triggertest.Decode(t, r.Fields["body"], r.FieldsEncoding["body"])
}

func TestSuite(t *testing.T) {
	t.Parallel()
	triggertest.Run(t, newBroker)
}

func TestCrash(t *testing.T) {
	t.Parallel()
	triggertest.Crash(t, "redis_stream", newBroker, 2000, 10)
}

// With no worker running, the source stops fetching once the queue holds
// max_pending tasks, and resumes when a worker drains it.
func TestBackPressure(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	b := newBroker(t, redisAddr).(*broker)
	tr := b.Trigger(t, "q", 1)
	tr.Options["max_pending"] = 5
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	fn := config.Function{Name: "consumer", Image: ref, Args: []string{"exit", "0"}, Triggers: []config.Trigger{tr}}
	testenv.StartStackWith(t, s, s.Config(t, redisAddr, fn), node.Options{Role: node.RoleGateway})
	b.Produce(t, tr, bodies(30)...)
	time.Sleep(3 * time.Second)
	pending, _ := b.rdb.LLen(context.Background(), keyspace.AsynqPending(queue.Name)).Result()
	if pending < 5 || pending > 6 {
		t.Fatalf("%d tasks pending with max_pending 5", pending)
	}
	if un := b.Unacked(t, tr); un < 24 {
		t.Fatalf("only %d left with the broker", un)
	}
	testenv.StartStackWith(t, s, s.Config(t, redisAddr, config.Function{Name: "consumer", Image: ref, Args: []string{"exit", "0"}}), node.Options{Role: node.RoleWorker})
	testenv.Eventually(t, 2*time.Minute, "the stream drained", func() bool { return b.Unacked(t, tr) == 0 })
}

func bodies(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("bp-%d", i)
	}
	return out
}
