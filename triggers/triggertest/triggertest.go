// Package triggertest is the suite every message-queue adapter passes
// against its real broker (Kafka: franz-go's kfake, which speaks the
// Kafka protocol): delivery, acknowledgement only after the enqueue,
// the same RequestId on redelivery, oversize messages dead-lettered
// without blocking, and a crash test that SIGKILLs `jobgate serve`.
package triggertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers"
	"github.com/jobgate/jobgate/triggers/sources"
)

// Broker is one adapter's broker, as the suite needs it.
type Broker interface {
	// Kind is the Records element key (Ckafka, Nats, Amqp, RedisStream).
	Kind() string
	// Trigger returns a trigger on a fresh topic/stream/queue, reading
	// from the earliest message, with the given batch size.
	Trigger(t *testing.T, name string, batchMax int) config.Trigger
	// Produce publishes bodies, in order.
	Produce(t *testing.T, tr config.Trigger, bodies ...string)
	// Unacked counts the messages jobgate's consumer has not yet
	// acknowledged (delivered or not).
	Unacked(t *testing.T, tr config.Trigger) int
	// Body extracts the message body from a Records element's object.
	Body(t *testing.T, element json.RawMessage) string
}

// Decode returns a Records element's value as the bytes produced: as is,
// or decoded from base64 when its encoding says so.
func Decode(t *testing.T, value, encoding string) string {
	t.Helper()
	switch encoding {
	case "":
		return value
	case triggers.Base64:
		b, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			t.Fatalf("base64 value %q: %v", value, err)
		}
		return string(b)
	}
	t.Fatalf("unknown encoding %q", encoding)
	return ""
}

// Run runs the suite for one broker. redisAddr is jobgate's Redis for
// the stack the tests start.
func Run(t *testing.T, newBroker func(t *testing.T, redisAddr string) Broker) {
	t.Run("DeliversAndAcks", func(t *testing.T) { deliversAndAcks(t, newBroker) })
	t.Run("AckAfterEnqueueAndSameRequestIdOnRedelivery", func(t *testing.T) { redelivery(t, newBroker) })
	t.Run("OversizeIsDeadLetteredAndAcked", func(t *testing.T) { oversize(t, newBroker) })
}

func nodeOptions() node.Options { return node.Options{} }

func image(t *testing.T) string {
	ref := testenv.Shared(t).Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// bodies returns every message body in the events of fn's invocations
// (waiting for them to finish), with how often each appears.
func bodies(t *testing.T, b Broker, records *record.Store, fn string) (map[string]int, int) {
	t.Helper()
	seen := map[string]int{}
	runs := 0
	cursor := ""
	sch, err := schemas.Compile(schemas.RecordsSchema(b.Kind()))
	if err != nil {
		t.Fatal(err)
	}
	for {
		page, next, err := records.List(context.Background(), record.Filter{Function: fn}, 100, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			ev, err := records.Event(context.Background(), r.RequestId)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Records []map[string]json.RawMessage }
			if err := json.Unmarshal(ev, &e); err != nil {
				t.Fatalf("event %s: %v", ev, err)
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(ev))
			if err != nil {
				t.Fatal(err)
			}
			if vs, err := schemas.Validate(sch, inst); err != nil || len(vs) > 0 {
				t.Fatalf("event does not match %s: %v %v\n%s", schemas.RecordsSchema(b.Kind()), vs, err, ev)
			}
			for _, el := range e.Records {
				seen[b.Body(t, el[b.Kind()])]++
			}
			runs++
		}
		if next == "" {
			return seen, runs
		}
		cursor = next
	}
}

func deliversAndAcks(t *testing.T, newBroker func(*testing.T, string) Broker) {
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	b := newBroker(t, redisAddr)
	tr := b.Trigger(t, "q", 3)
	cfg := s.Config(t, redisAddr, config.Function{Name: "consumer", Image: image(t), Args: []string{"exit", "0"}, Triggers: []config.Trigger{tr}})
	st := testenv.StartStackWith(t, s, cfg, nodeOptions())
	// m6 is not UTF-8: it arrives base64 with an encoding field, byte-exact.
	want := []string{"m1", "m2 ✓", `m3 "quoted"`, "m4", "m5", "m6 \xff\x00\xfe", "m7"}
	b.Produce(t, tr, want...)
	testenv.Eventually(t, 30*time.Second, "all bodies in events", func() bool {
		seen, _ := bodies(t, b, st.Records, "consumer")
		return len(seen) == len(want)
	})
	seen, runs := bodies(t, b, st.Records, "consumer")
	for _, w := range want {
		if seen[w] != 1 {
			t.Fatalf("%q delivered %d times (%v)", w, seen[w], seen)
		}
	}
	if runs > len(want) || runs < 3 {
		t.Fatalf("%d events for %d messages with batch max 3", runs, len(want))
	}
	testenv.Eventually(t, 30*time.Second, "all acknowledged", func() bool { return b.Unacked(t, tr) == 0 })
	if code, body := st.Do(t, "GET", "/readyz", nil, nil); code != 200 || !strings.Contains(string(body), "trigger consumer/q") {
		t.Fatalf("readyz: %d %s", code, body)
	}
}

// faultySink wraps the real submitter: it records each call (and how many
// messages were unacknowledged at that moment) and can fail a call after
// the real submit succeeded — a crash between enqueue and ack.
type faultySink struct {
	inner      triggers.Sink
	broker     Broker
	tr         config.Trigger
	t          *testing.T
	mu         sync.Mutex
	ids        []string
	unacked    []int
	duplicates []bool
	failAfter  bool
}

func (f *faultySink) Submit(ctx context.Context, req submit.Request) (submit.Result, error) {
	un := f.broker.Unacked(f.t, f.tr)
	res, err := f.inner.Submit(ctx, req)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, req.RequestID)
	f.unacked = append(f.unacked, un)
	f.duplicates = append(f.duplicates, res.Duplicate)
	if err == nil && f.failAfter {
		return res, fmt.Errorf("%w: injected: crash after enqueue", submit.ErrUnavailable)
	}
	return res, err
}

func (f *faultySink) EventRoom(fn string) int { return f.inner.EventRoom(fn) }

func (f *faultySink) Known(ctx context.Context, id string) (bool, error) {
	return f.inner.Known(ctx, id)
}

func (f *faultySink) calls() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.ids) }

func redelivery(t *testing.T, newBroker func(*testing.T, string) Broker) {
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	b := newBroker(t, redisAddr)
	tr := b.Trigger(t, "q", 1)
	cfg := s.Config(t, redisAddr, config.Function{Name: "consumer", Image: image(t), Args: []string{"exit", "0"}})
	st := testenv.StartStackWith(t, s, cfg, nodeOptions())
	sub := submit.New(cfg, st.Node.Redis(), st.Records, asynq.NewClientFromRedisClient(st.Node.Redis()))
	t.Cleanup(func() { sub.Close() })
	deps := func(sink triggers.Sink) sources.Deps {
		return sources.Deps{Config: cfg, Sink: sink, DeadLetters: deadletter.NewStore(st.Node.Redis(), cfg.Redis.KeyPrefix(), deadletter.Limits{Retention: cfg.DeadLetterRetention(), Max: cfg.DeadLetter.Max}),
			Redis: st.Node.Redis(), RedisTarget: st.Node.RedisTarget(), Logger: testenv.Logger(t)}
	}
	first := &faultySink{inner: sub, broker: b, tr: tr, t: t, failAfter: true}
	src, err := sources.One(deps(first), "consumer", parsed(t, cfg, tr))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Produce(t, tr, "only-once")
	testenv.Eventually(t, 30*time.Second, "the first submit", func() bool { return first.calls() >= 1 })
	// "Crash": stop without having acknowledged.
	if err := src.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first.unacked[0] != 1 {
		t.Fatalf("%d messages unacknowledged while the enqueue ran, want 1 (acked before enqueue?)", first.unacked[0])
	}
	if n := b.Unacked(t, tr); n != 1 {
		t.Fatalf("after a failed delivery %d unacknowledged, want 1", n)
	}
	second := &faultySink{inner: sub, broker: b, tr: tr, t: t}
	src2, err := sources.One(deps(second), "consumer", parsed(t, cfg, tr))
	if err != nil {
		t.Fatal(err)
	}
	if err := src2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer src2.Stop(context.Background())
	testenv.Eventually(t, 60*time.Second, "the redelivery", func() bool { return second.calls() >= 1 })
	if second.ids[0] != first.ids[0] || !second.duplicates[0] {
		t.Fatalf("redelivery: RequestId %s (duplicate %v), first was %s", second.ids[0], second.duplicates[0], first.ids[0])
	}
	testenv.Eventually(t, 30*time.Second, "acknowledged", func() bool { return b.Unacked(t, tr) == 0 })
	end := st.WaitEnd(t, first.ids[0], 30*time.Second)
	starts := 0
	for _, l := range st.Lines(t, end.RequestId) {
		if strings.HasPrefix(l.Line, "START ") {
			starts++
		}
	}
	if end.Status != record.Finished || starts != 1 {
		t.Fatalf("%+v started %d times", end, starts)
	}
}

func oversize(t *testing.T, newBroker func(*testing.T, string) Broker) {
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	b := newBroker(t, redisAddr)
	tr := b.Trigger(t, "q", 1)
	cfg := s.Config(t, redisAddr, config.Function{Name: "consumer", Image: image(t), Args: []string{"exit", "0"}, Triggers: []config.Trigger{tr}})
	st := testenv.StartStackWith(t, s, cfg, nodeOptions())
	b.Produce(t, tr, strings.Repeat("x", 140_000), "small-after")
	testenv.Eventually(t, 30*time.Second, "the small message after the oversize one", func() bool {
		seen, _ := bodies(t, b, st.Records, "consumer")
		return seen["small-after"] == 1
	})
	dl := deadletter.NewStore(st.Node.Redis(), cfg.Redis.KeyPrefix(), deadletter.Limits{Retention: cfg.DeadLetterRetention(), Max: cfg.DeadLetter.Max})
	es, _, err := dl.List(context.Background(), 10, "")
	if err != nil || len(es) != 1 || es[0].ErrorCode != 406 || !strings.Contains(es[0].ErrorMessage, "does not fit") ||
		!strings.Contains(es[0].Body.ClientContext, strings.Repeat("x", 1000)) {
		t.Fatalf("dead letters %+v %v", es, err)
	}
	testenv.Eventually(t, 30*time.Second, "all acknowledged", func() bool { return b.Unacked(t, tr) == 0 })
}

// CrashResult is one row of the crash-test table.
type CrashResult struct {
	Broker                                  string
	Produced, Ran, Lost, Duplicates, Events int
	Elapsed                                 time.Duration
}

// Crash produces n messages while `jobgate serve` consumes them, SIGKILLs
// it twice mid-way and restarts it; every body must reach a container.
func Crash(t *testing.T, name string, newBroker func(t *testing.T, redisAddr string) Broker, n, batchMax int) CrashResult {
	s := testenv.Shared(t)
	redisAddr := testenv.Redis(t)
	b := newBroker(t, redisAddr)
	tr := b.Trigger(t, "q", batchMax)
	cfg := s.Config(t, redisAddr, config.Function{Name: "consumer", Image: image(t), Args: []string{"exit", "0"}, MemoryMB: 64, Triggers: []config.Trigger{tr}})
	cfg.Gateway.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Worker.Concurrency = 8
	// An event the killed process was scheduling is freed once asynq's
	// 30 s lease lapses; a short orphan window has the sweeper queue it
	// again then, instead of asynq's recoverer up to 2 minutes later.
	cfg.Submit.OrphanS = 5
	path := testenv.WriteConfig(t, cfg)
	url := "http://" + cfg.Gateway.Listen
	records := testenv.RecordStore(t, redisAddr, cfg)

	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("msg-%05d", i)
	}
	t0 := time.Now()
	serve := s.StartServe(t, path, "all", url)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += 100 {
			b.Produce(t, tr, want[i:min(i+100, n)]...)
		}
	}()
	progress := 0 // bodies seen when the current process started
	for kill := 1; kill <= 2; kill++ {
		// Killed mid-way through its share, and only once it has queued
		// something itself: a process killed while it is still joining
		// its consumer group tests the broker's session expiry, not us.
		target := min(max(n*kill/3, progress+1), n)
		testenv.Eventually(t, 3*time.Minute, fmt.Sprintf("%d bodies before kill %d", target, kill), func() bool {
			seen, _ := bodies(t, b, records, "consumer")
			return len(seen) >= target
		})
		_ = serve.Cmd.Process.Signal(syscall.SIGKILL)
		_ = serve.Cmd.Wait()
		seen, _ := bodies(t, b, records, "consumer")
		progress = len(seen)
		serve = s.StartServe(t, path, "all", url)
	}
	<-produced
	testenv.Eventually(t, 5*time.Minute, "every body", func() bool {
		seen, _ := bodies(t, b, records, "consumer")
		return len(seen) >= n
	})
	queued := time.Since(t0)
	testenv.Eventually(t, 2*time.Minute, "all acknowledged", func() bool { return b.Unacked(t, tr) == 0 })
	seen, runs := bodies(t, b, records, "consumer")
	res := CrashResult{Broker: name, Produced: n, Events: runs}
	for _, w := range want {
		switch c := seen[w]; {
		case c == 0:
			res.Lost++
		default:
			res.Ran++
			res.Duplicates += c - 1
		}
	}
	// Every event ran to the end. An event a killed worker was scheduling
	// comes back when asynq's lease lapses (30 s) and the sweeper runs.
	cursor := ""
	for {
		page, next, err := records.List(context.Background(), record.Filter{Function: "consumer"}, 100, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			testenv.Eventually(t, 4*time.Minute, "event "+r.RequestId+" to end", func() bool {
				if got, err := records.Get(context.Background(), r.RequestId); err == nil {
					r = got
				}
				return r.Status.Terminal()
			})
			if r.Status != record.Finished {
				t.Fatalf("event %s ended %s: %s", r.RequestId, r.Status, r.Message)
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	res.Elapsed = time.Since(t0)
	t.Logf("crash test %s: produced %d, ran %d, lost %d, duplicates %d, in %d events; all queued after %s (%.0f messages/s through two SIGKILLs and restarts), all finished after %s",
		name, res.Produced, res.Ran, res.Lost, res.Duplicates, res.Events, queued.Round(100*time.Millisecond), float64(n)/queued.Seconds(), res.Elapsed.Round(time.Second))
	if res.Lost != 0 || res.Duplicates != 0 {
		t.Fatalf("%d messages lost, %d ran twice", res.Lost, res.Duplicates)
	}
	return res
}

// parsed is tr as a parsed config holds it (options decoded, defaults
// applied): sources.One takes parsed triggers.
func parsed(t *testing.T, cfg *config.Config, tr config.Trigger) config.Trigger {
	t.Helper()
	c := *cfg
	c.Functions = []config.Function{{Name: "consumer", Image: "r/consumer:1", Triggers: []config.Trigger{tr}}}
	if err := config.Complete(&c, "test"); err != nil {
		t.Fatal(err)
	}
	return c.Functions[0].Triggers[0]
}
