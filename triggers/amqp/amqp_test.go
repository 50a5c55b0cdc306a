package amqp_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	amqpsrc "github.com/jobgate/jobgate/triggers/amqp"
	"github.com/jobgate/jobgate/triggers/triggertest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var queues atomic.Int64

// broker is Debian's rabbitmq-server, started privately by testenv.
type broker struct {
	r  *testenv.RabbitMQ
	ch *amqp.Channel
}

func newBroker(t *testing.T, _ string) triggertest.Broker {
	r := testenv.StartRabbitMQ(t)
	conn, err := amqp.Dial(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return &broker{r: r, ch: ch}
}

func (b *broker) Kind() string { return "Amqp" }

func (b *broker) Trigger(t *testing.T, name string, batchMax int) config.Trigger {
	q := fmt.Sprintf("jobs-%d-%d", queues.Add(1), testenv.FreePort(t))
	if _, err := b.ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	return config.Trigger{Type: "amqp", Name: name, Options: map[string]any{
		"url": b.r.URL, "queue": q, "batch": map[string]any{"max": batchMax, "wait_ms": 200}}}
}

func (b *broker) Produce(t *testing.T, tr config.Trigger, bodies ...string) {
	for _, body := range bodies {
		err := b.ch.PublishWithContext(context.Background(), "", tr.Options["queue"].(string), false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: fmt.Sprintf("%x", sha256.Sum256([]byte(body)))[:16],
			ContentType: "text/plain", Body: []byte(body),
		})
		if err != nil {
			t.Errorf("publish: %v", err)
			return
		}
	}
}

// Unacked is the queue's messages (ready + unacknowledged).
func (b *broker) Unacked(t *testing.T, tr config.Trigger) int {
	out, err := b.r.Ctl("list_queues", "name", "messages")
	if err != nil {
		t.Errorf("rabbitmqctl list_queues: %v", err)
		return -1
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == tr.Options["queue"].(string) {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func (b *broker) Body(t *testing.T, el json.RawMessage) string {
	var r amqpsrc.Record
	if err := json.Unmarshal(el, &r); err != nil {
		t.Fatal(err)
	}
	if r.MessageID == "" || !strings.HasPrefix(r.Queue, "jobs-") || r.RoutingKey != r.Queue {
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
	triggertest.Crash(t, "amqp (message ids set)", newBroker, 2000, 10)
}
