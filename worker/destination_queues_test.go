package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/worker"
)

// One FINISHED invocation delivered to every kind of target: a Redis
// stream (jobgate's own Redis), NATS JetStream and a URL as CloudEvents
// (structured and binary mode), RabbitMQ, Kafka (franz-go's kfake: no
// real broker can run here), and a function as a CloudEvent. Each gets
// exactly one message carrying the result and the delivery's id.
func TestDestinationQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}

	ns := startNATS(t, &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"results.>"}})
	if err != nil {
		t.Fatal(err)
	}

	rabbit := testenv.StartRabbitMQ(t)
	conn, err := amqp.Dial(rabbit.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("dest-results", "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "ok", "dest-results", false, nil); err != nil {
		t.Fatal(err)
	}

	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.SeedTopics(1, "results"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)

	var mu sync.Mutex
	var posts []*http.Request
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		posts, bodies = append(posts, r), append(bodies, b)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)

	st := testenv.StartStack(t,
		config.Function{Name: "ok", Image: ref, Args: []string{"echo", "hello"}, OnSuccess: []config.Destination{
			{RedisStream: &config.DestRedisStream{Stream: "results"}},
			{NATS: &config.DestNATS{URL: ns.ClientURL(), Subject: "results.ok"}, Format: "cloudevents"},
			{AMQP: &config.DestAMQP{URL: rabbit.URL, Exchange: "dest-results", RoutingKey: "ok"}},
			{Kafka: &config.DestKafka{Brokers: kc.ListenAddrs(), Topic: "results"}},
			{URL: srv.URL + "/ce", Format: "cloudevents"},
			{Function: "sink", Format: "cloudevents"},
		}},
		config.Function{Name: "sink", Image: ref, Args: []string{"event"}})
	rec := st.Invoke(t, "ok", "?wait=none", []byte(`{"n":7}`), http.StatusAccepted)
	if end := st.WaitEnd(t, rec.RequestId, time.Minute); end.Status != record.Finished {
		t.Fatalf("%+v", end)
	}
	delivery := func(i int) string {
		return queue.Destination{RequestId: rec.RequestId, Function: "ok", Attempt: 1, Success: true, Index: i}.ID()
	}
	testenv.EventuallyNoError(t, time.Minute, "every delivery recorded", func() error {
		got, err := st.Records.Get(ctx, rec.RequestId)
		if err != nil {
			return err
		}
		for _, d := range got.Destinations {
			if d.Status != record.DestinationDelivered || d.Attempts != 1 {
				return &mismatch{got.Destinations}
			}
		}
		if len(got.Destinations) != 6 {
			return &mismatch{got.Destinations}
		}
		return nil
	})
	isResult := func(where string, b []byte) {
		t.Helper()
		var r worker.Result
		if err := json.Unmarshal(b, &r); err != nil || r.RequestId != rec.RequestId || r.Condition != "Success" || string(r.Event) != `{"n":7}` {
			t.Errorf("%s: not the result: %s (%v)", where, b, err)
		}
	}

	// Redis stream: one entry.
	entries, err := st.Node.Redis().XRange(ctx, "results", "-", "+").Result()
	if err != nil || len(entries) != 1 || entries[0].Values["delivery"] != delivery(0) {
		t.Fatalf("stream: %+v %v", entries, err)
	}
	isResult("stream", []byte(entries[0].Values["result"].(string)))

	// NATS: one message, a structured CloudEvent whose data is the result.
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("nats stream: %+v %v", info, err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "results.ok")
	if err != nil {
		t.Fatal(err)
	}
	var ce struct {
		SpecVersion, ID, Source, Type, Subject string
		Data                                   json.RawMessage
	}
	if err := json.Unmarshal(msg.Data, &ce); err != nil || ce.SpecVersion != "1.0" || ce.ID != delivery(1) ||
		ce.Type != "dev.jobgate.invocation.success" || ce.Source != "/jobgate/functions/ok" || ce.Subject != rec.RequestId {
		t.Errorf("nats cloudevent %s (%v)", msg.Data, err)
	}
	isResult("nats data", ce.Data)

	// RabbitMQ: one message.
	m, ok, err := ch.Get(q.Name, true)
	if err != nil || !ok || m.MessageId != delivery(2) {
		t.Fatalf("amqp: %+v %v %v", m, ok, err)
	}
	isResult("amqp", m.Body)
	if _, more, _ := ch.Get(q.Name, true); more {
		t.Error("amqp: a second message")
	}

	// Kafka: one record.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ConsumeTopics("results"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(recs) == 0 && fctx.Err() == nil {
		recs = append(recs, cl.PollFetches(fctx).Records()...)
	}
	if len(recs) != 1 || string(recs[0].Key) != delivery(3) {
		t.Fatalf("kafka: %d records", len(recs))
	}
	isResult("kafka", recs[0].Value)

	// The URL: binary mode.
	mu.Lock()
	if len(posts) != 1 || posts[0].Header.Get("Ce-Id") != delivery(4) || posts[0].Header.Get("Ce-Specversion") != "1.0" ||
		posts[0].Header.Get("X-Jobgate-Delivery") != delivery(4) || !strings.HasPrefix(posts[0].Header.Get("Content-Type"), "application/json") {
		t.Errorf("url posts: %d, %v", len(posts), posts)
	} else {
		isResult("url", bodies[0])
	}
	mu.Unlock()

	// The function: the CloudEvent as its invoke API makes it, "ce" first.
	sinkID := submit.DeriveRequestID("destination", delivery(5))
	if end := st.WaitEnd(t, sinkID, time.Minute); end.Status != record.Finished {
		t.Fatalf("sink: %+v", end)
	}
	out := st.Stdout(t, sinkID)
	var ev struct {
		CE map[string]string `json:"ce"`
		worker.Result
	}
	if len(out) != 1 || json.Unmarshal([]byte(out[0]), &ev) != nil || ev.CE["id"] != delivery(5) || ev.CE["subject"] != rec.RequestId || ev.RequestId != rec.RequestId {
		t.Errorf("sink saw %q", out)
	}
}

// Deliveries to one queue target share a connection: two invocations'
// results reach NATS over the one the first opened. When the broker
// restarts under it, the next delivery still arrives (the connection
// reconnects, or the failed publish drops it and the retry dials anew).
func TestDestinationConnectionIsShared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ref := jobImage(t)
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	ns := startNATS(t, opts)
	opts.Port = ns.Addr().(*net.TCPAddr).Port // a restart listens where the worker connected
	url := ns.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"results.>"}}); err != nil {
		t.Fatal(err)
	}

	st := testenv.StartStack(t, config.Function{Name: "ok", Image: ref, Args: []string{"echo", "hello"},
		OnSuccess: []config.Destination{{NATS: &config.DestNATS{URL: url, Subject: "results.ok"}}}})
	delivered := func(n uint64) {
		t.Helper()
		rec := st.Invoke(t, "ok", "?wait=none", []byte(`{}`), http.StatusAccepted)
		if end := st.WaitEnd(t, rec.RequestId, time.Minute); end.Status != record.Finished {
			t.Fatalf("%+v", end)
		}
		testenv.EventuallyNoError(t, time.Minute, "the result in the stream", func() error {
			stream, err := js.Stream(ctx, "RESULTS")
			if err != nil {
				return err
			}
			info, err := stream.Info(ctx)
			if err != nil {
				return err
			}
			if info.State.Msgs != n {
				return fmt.Errorf("%d messages, want %d", info.State.Msgs, n)
			}
			return nil
		})
	}
	before := connections(t, ns)
	delivered(1)
	delivered(2)
	if opened := connections(t, ns) - before; opened != 1 {
		t.Fatalf("two deliveries opened %d connections, want 1", opened)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	startNATS(t, opts)
	delivered(3)
}

// startNATS runs an embedded nats-server until t's cleanup.
func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// connections is how many client connections ns has accepted so far.
func connections(t *testing.T, ns *server.Server) uint64 {
	t.Helper()
	v, err := ns.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v.TotalConnections
}
