//go:build chaos

package chaos_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

var (
	report   = flag.String("chaos.report", "", "markdown file whose chaos section is replaced with the results")
	perRound = flag.Int("chaos.events", 270, "events produced per fault (spread over the sources)")
	loadFor  = flag.Duration("chaos.load", 6*time.Second, "how long each fault's load runs")
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Sources, in table order, with their share of a round's events.
var sources = []struct {
	name  string
	share int
}{{"invoke API", 30}, {"HTTP trigger", 20}, {"Kafka", 10}, {"NATS JetStream", 10}, {"RabbitMQ", 10}, {"Redis Streams", 10}, {"timer", 0}}

// tokenRE finds a produced event's token anywhere in the event JSON (the
// body is embedded, escaped or not, by every source).
var tokenRE = regexp.MustCompile(`chaos-r\d+-s\d+-\d+`)

// collector is where every job run reports (the job body's `post`).
type collector struct {
	mu   sync.Mutex
	runs map[string]int // token → runs
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	// A queue trigger's batch event carries several messages.
	tokens := tokenRE.FindAllString(string(b), -1)
	if len(tokens) == 0 { // a timer event carries no producer token
		tokens = []string{"timer:" + r.Header.Get("X-Request-Id")}
	}
	c.mu.Lock()
	seen := map[string]bool{} // one run per token, however often its event names it
	for _, token := range tokens {
		if !seen[token] {
			seen[token] = true
			c.runs[token]++
		}
	}
	c.mu.Unlock()
}

func (c *collector) count(token string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[token]
}

// tally is one source's line in a fault's table.
type tally struct {
	produced, accepted, once, twice, lost, dead, stuck int
}

// round is one fault's run.
type round struct {
	n        int
	fault    string
	strict   bool // exactly-once is promised under this fault
	mu       sync.Mutex
	produced map[int]int    // source → produced
	accepted map[string]int // token → source
	start    time.Time
	loadEnd  time.Time
	drain    time.Duration
	rows     []tally
}

func (r *round) produce(src int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.produced[src]++
	return fmt.Sprintf("chaos-r%d-s%d-%d", r.n, src, r.produced[src])
}

func (r *round) accept(src int, token string) {
	r.mu.Lock()
	r.accepted[token] = src
	r.mu.Unlock()
}

// proc is one `jobgate serve` process of the layout.
type proc struct {
	name, role, cfg, url string
	serve                *testenv.Serve
}

// cluster is the layout under test and everything feeding it.
type cluster struct {
	t       *testing.T
	s       *testenv.Services
	redis   *testenv.RedisServer
	rdb     *redis.Client
	procs   []*proc // gateway-1, gateway-2, worker-1, worker-2
	col     *collector
	records *record.Store
	dlq     *deadletter.Store
	insp    *asynq.Inspector

	kafka     *kgo.Client
	kadm      *kadm.Client
	natsDir   string
	natsPort  int
	nats      *server.Server
	js        jetstream.JetStream
	natsMu    sync.Mutex
	amqpCh    *amqp.Channel
	amqpQueue string
	stream    string
	streamSeq atomic.Int64
}

func TestChaos(t *testing.T) {
	c := setup(t)
	faults := []struct {
		name   string
		strict bool
		inject func()
	}{
		{"SIGKILL gateway-1", true, func() { c.bounce(c.procs[0]) }},
		{"SIGKILL gateway-2", true, func() { c.bounce(c.procs[1]) }},
		{"SIGKILL worker-1", true, func() { c.bounce(c.procs[2]) }},
		{"SIGKILL worker-2", true, func() { c.bounce(c.procs[3]) }},
		{"restart containerd (SIGKILL)", true, func() { c.s.RestartContainerd(t) }},
		{"kill the NATS broker", true, c.bounceNATS},
		{"restart Redis, appendfsync always (SIGKILL)", true, func() { c.redis.Restart(t) }},
		{"restart Redis, appendfsync everysec (SIGKILL)", false, func() {
			if err := c.rdb.ConfigSet(context.Background(), "appendfsync", "everysec").Err(); err != nil {
				t.Fatal(err)
			}
			// The restarted server reads its command line again: always.
			c.redis.Restart(t)
		}},
	}
	var rounds []*round
	for i, f := range faults {
		r := &round{n: i + 1, fault: f.name, strict: f.strict, produced: map[int]int{}, accepted: map[string]int{}}
		c.run(r, f.inject)
		rounds = append(rounds, r)
		t.Logf("\n%s", r.table())
	}
	total := 0
	for _, r := range rounds {
		sum := r.rows[len(r.rows)-1]
		total += sum.accepted
		if r.strict && (sum.lost != 0 || sum.twice != 0 || sum.stuck != 0) {
			t.Errorf("%s: %d lost, %d ran twice, %d not final; want 0", r.fault, sum.lost, sum.twice, sum.stuck)
		}
		if sum.accepted == 0 {
			t.Errorf("%s: nothing accepted", r.fault)
		}
	}
	if total < 2000 {
		t.Errorf("%d events accepted in all, want ≥ 2000", total)
	}
	if *report != "" {
		if err := writeReport(*report, rounds, total); err != nil {
			t.Fatal(err)
		}
	}
}

func setup(t *testing.T) *cluster {
	s := testenv.Shared(t)
	c := &cluster{t: t, s: s, col: &collector{runs: map[string]int{}}}
	col := httptest.NewServer(c.col)
	t.Cleanup(col.Close)
	ref := s.Registry + "/chaos/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	c.redis = testenv.StartRedisAOF(t, "always")
	c.rdb = redis.NewClient(&redis.Options{Addr: c.redis.Addr})
	t.Cleanup(func() { c.rdb.Close() })

	// Brokers: Kafka (kfake, in-process), NATS (embedded, restartable),
	// RabbitMQ (rabbitmq-server), Redis Streams (jobgate's Redis).
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	if c.kafka, err = kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("chaos"),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kafka.Close)
	c.kadm = kadm.NewClient(c.kafka)
	if _, err := c.kadm.CreateTopics(context.Background(), 3, 1, nil, "chaos"); err != nil {
		t.Fatal(err)
	}
	c.natsDir, c.natsPort = t.TempDir(), testenv.FreePort(t)
	c.startNATS()
	t.Cleanup(func() { c.natsMu.Lock(); c.nats.Shutdown(); c.natsMu.Unlock() })
	nc, err := nats.Connect(c.nats.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := c.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "CHAOS", Subjects: []string{"chaos.>"}}); err != nil {
		t.Fatal(err)
	}
	rmq := testenv.StartRabbitMQ(t)
	conn, err := amqp.Dial(rmq.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if c.amqpCh, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if err := c.amqpCh.Confirm(false); err != nil {
		t.Fatal(err)
	}
	c.amqpQueue = fmt.Sprintf("chaos-%d", testenv.FreePort(t))
	if _, err := c.amqpCh.QueueDeclare(c.amqpQueue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	c.stream = "chaos-stream"

	batch := map[string]any{"max": 20, "wait_ms": 100}
	retry := 2
	fn := config.Function{Name: "chaos", Image: ref, Args: []string{"post", col.URL, "sleep", "300ms"}, Network: "host",
		Retry: config.Retry{Max: &retry, DelayS: 2},
		Triggers: []config.Trigger{
			{Type: "http", Name: "hook", Options: map[string]any{"path": "/hooks/chaos", "dedupe_header": "X-Request-Id"}},
			{Type: "kafka", Name: "kafka", Options: map[string]any{"brokers": toAny(kc.ListenAddrs()), "topic": "chaos", "group": "jobgate", "start": "earliest", "batch": batch}},
			{Type: "nats", Name: "nats", Options: map[string]any{"url": c.nats.ClientURL(), "stream": "CHAOS", "subject": "chaos.>", "durable": "jobgate", "start": "earliest", "ack_wait_s": 10, "batch": batch}},
			{Type: "amqp", Name: "amqp", Options: map[string]any{"url": rmq.URL, "queue": c.amqpQueue, "batch": batch}},
			{Type: "redis_stream", Name: "stream", Options: map[string]any{"stream": c.stream, "group": "jobgate", "start": "earliest", "batch": batch}},
		}}
	timerFn := config.Function{Name: "chaos-timer", Image: ref, Args: []string{"post", col.URL}, Network: "host",
		Retry:    config.Retry{Max: &retry, DelayS: 2},
		Triggers: []config.Trigger{{Type: "timer", Name: "tick", Options: map[string]any{"cron": "*/2 * * * * * *"}}}}

	for i, role := range []string{"gateway", "gateway", "worker", "worker"} {
		cfg := s.Config(t, c.redis.Addr, fn, timerFn)
		name := fmt.Sprintf("%s-%d", role, i%2+1)
		cfg.Worker.Node = name
		cfg.Worker.Concurrency = 6
		p := &proc{name: name, role: role}
		if role == "gateway" {
			port := testenv.FreePort(t)
			cfg.Gateway.Listen = fmt.Sprintf("127.0.0.1:%d", port)
			p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
		}
		p.cfg = testenv.WriteConfig(t, cfg)
		p.serve = s.StartServe(t, p.cfg, role, p.url)
		c.procs = append(c.procs, p)
		if i == 0 {
			c.records = testenv.RecordStore(t, c.redis.Addr, cfg)
			c.dlq = deadletter.NewStore(c.rdb, cfg.Redis.KeyPrefix(), deadletter.Limits{})
		}
	}
	c.insp = asynq.NewInspectorFromRedisClient(c.rdb)
	return c
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (c *cluster) startNATS() {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: c.natsPort, JetStream: true, StoreDir: c.natsDir, NoLog: true, NoSigs: true})
	if err != nil {
		c.t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		c.t.Fatal("nats-server not ready")
	}
	c.natsMu.Lock()
	c.nats = srv
	c.natsMu.Unlock()
}

// bounceNATS kills the broker (no graceful handover) and starts it again
// on its store after 2 s.
func (c *cluster) bounceNATS() {
	c.natsMu.Lock()
	srv := c.nats
	c.natsMu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
	time.Sleep(2 * time.Second) // the outage
	c.startNATS()
}

// bounce SIGKILLs p and starts it again after 2 s.
func (c *cluster) bounce(p *proc) {
	_ = p.serve.Cmd.Process.Signal(syscall.SIGKILL)
	_ = p.serve.Cmd.Wait()
	time.Sleep(2 * time.Second) // the outage
	p.serve = c.s.StartServe(c.t, p.cfg, p.role, p.url)
}

// run drives one round: load for *loadFor with the fault injected a third
// of the way in, then waits for everything accepted to settle and tallies.
func (c *cluster) run(r *round, inject func()) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.start = time.Now()
	var wg sync.WaitGroup
	for i, src := range sources {
		if src.share == 0 {
			continue
		}
		n := *perRound * src.share / 90
		wg.Add(1)
		go func(i, n int) {
			defer wg.Done()
			every := *loadFor / time.Duration(n)
			var inner sync.WaitGroup
			for k := 0; k < n; k++ {
				token := r.produce(i)
				inner.Add(1)
				go func() {
					defer inner.Done()
					if c.send(ctx, i, token) {
						r.accept(i, token)
					}
				}()
				time.Sleep(every)
			}
			inner.Wait()
		}(i, n)
	}
	time.Sleep(*loadFor / 3)
	inject()
	wg.Wait()
	r.loadEnd = time.Now()
	if r.loadEnd.Before(r.start.Add(*loadFor)) {
		r.loadEnd = r.start.Add(*loadFor)
	}
	c.settle(r)
	r.drain = time.Since(r.loadEnd)
	r.rows = c.tally(r)
}

// send delivers one event as a careful producer does: retried until it is
// acknowledged (a minute at most), with the same idempotency key or
// message id each time.
func (c *cluster) send(ctx context.Context, src int, token string) bool {
	deadline := time.Now().Add(time.Minute)
	body := fmt.Sprintf(`{"token":%q}`, token)
	for try := 0; time.Now().Before(deadline); try++ {
		if try > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		var err error
		switch sources[src].name {
		case "invoke API", "HTTP trigger":
			gw := c.procs[try%2]
			path, hdr := "/v1/functions/chaos/invoke?wait=none", "Idempotency-Key"
			if sources[src].name == "HTTP trigger" {
				path, hdr = "/hooks/chaos", "X-Request-Id"
			}
			err = post(ctx, gw.url+path, body, hdr, token)
		case "Kafka":
			err = c.kafka.ProduceSync(ctx, &kgo.Record{Value: []byte(body)}).FirstErr()
		case "NATS JetStream":
			_, err = c.js.Publish(ctx, "chaos.orders", []byte(body), jetstream.WithMsgID(token))
		case "RabbitMQ":
			var dc *amqp.DeferredConfirmation
			dc, err = c.amqpCh.PublishWithDeferredConfirmWithContext(ctx, "", c.amqpQueue, false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, MessageId: token, ContentType: "application/json", Body: []byte(body)})
			if err == nil && !dc.Wait() {
				err = fmt.Errorf("nacked")
			}
		case "Redis Streams":
			err = c.xadd(ctx, token, body)
		}
		if err == nil {
			return true
		}
	}
	return false
}

// xadd appends with an id of our own, so a retry of an append that did
// land is refused rather than doubled.
func (c *cluster) xadd(ctx context.Context, token, body string) error {
	// One id per token, increasing in the order tokens are first sent.
	id := c.streamID(token)
	err := c.rdb.XAdd(ctx, &redis.XAddArgs{Stream: c.stream, ID: id, Values: map[string]any{"body": body}}).Err()
	if err != nil && strings.Contains(err.Error(), "equal or smaller") {
		// Landed before (the reply was lost), unless Redis lost it since:
		// then it was never durable and this is the producer's retry.
		n, xerr := c.rdb.XRange(ctx, c.stream, id, id).Result()
		if xerr == nil && len(n) == 1 {
			return nil
		}
		c.forget(token)
		return fmt.Errorf("xadd %s: %w", id, err)
	}
	return err
}

var (
	idsMu sync.Mutex
	ids   = map[string]string{}
)

func (c *cluster) streamID(token string) string {
	idsMu.Lock()
	defer idsMu.Unlock()
	if id, ok := ids[token]; ok {
		return id
	}
	id := fmt.Sprintf("%d-1", c.streamSeq.Add(1))
	ids[token] = id
	return id
}

func (c *cluster) forget(token string) {
	idsMu.Lock()
	delete(ids, token)
	idsMu.Unlock()
}

func post(ctx context.Context, url, body, hdr, key string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(hdr, key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// settle waits until every accepted event has run or been dead-lettered,
// no record of the round is still open and the queue is empty (nothing
// more can run), or 4 minutes pass.
func (c *cluster) settle(r *round) {
	deadline := time.Now().Add(4 * time.Minute)
	var idleSince time.Time
	for time.Now().Before(deadline) {
		done, idle := c.quiet(r)
		if done {
			return
		}
		// Some accepted events have not run, but nothing is queued or
		// open any more: give the triggers 20 s, then count them lost.
		switch {
		case !idle:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) > 20*time.Second:
			return
		}
		time.Sleep(time.Second)
	}
	c.t.Logf("%s: not settled after 4 minutes", r.fault)
}

// quiet reports whether the round is done (every accepted event ran or
// was dead-lettered, no record open, nothing queued) and whether it is at
// least idle (no record open, nothing queued).
func (c *cluster) quiet(r *round) (done, idle bool) {
	open, err := c.openRecords(r)
	if err != nil || len(open) > 0 {
		return false, false
	}
	q, err := c.insp.GetQueueInfo(queue.Name)
	if err != nil || q.Pending+q.Active+q.Retry+q.Scheduled > 0 {
		return false, false
	}
	if n, err := c.backlog(); err != nil || n > 0 {
		return false, false
	}
	dead := c.deadTokens()
	r.mu.Lock()
	defer r.mu.Unlock()
	for token := range r.accepted {
		if c.col.count(token) == 0 && !dead[token] {
			return false, true
		}
	}
	return true, true
}

// backlog counts the messages the brokers hold that jobgate has not
// acknowledged (RabbitMQ: ready ones only; its unacknowledged count needs
// rabbitmqctl, too slow to poll).
func (c *cluster) backlog() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lags, err := c.kadm.Lag(ctx, "jobgate")
	if err != nil {
		return 0, err
	}
	l := lags["jobgate"]
	if err := l.Error(); err != nil {
		return 0, err
	}
	n := l.Lag.Total()
	cons, err := c.js.Consumer(ctx, "CHAOS", "jobgate")
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	n += int64(info.NumAckPending) + int64(info.NumPending)
	q, err := c.amqpCh.QueueDeclarePassive(c.amqpQueue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	n += int64(q.Messages)
	groups, err := c.rdb.XInfoGroups(ctx, c.stream).Result()
	if err != nil {
		return 0, err
	}
	for _, g := range groups {
		n += g.Pending + g.Lag
	}
	return n, nil
}

// openRecords are the round's records (enqueued before its load ended)
// that are not final.
func (c *cluster) openRecords(r *round) ([]*record.Record, error) {
	var open []*record.Record
	for _, fn := range []string{"chaos", "chaos-timer"} {
		recs, err := c.roundRecords(r, fn)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			if !rec.Status.Terminal() {
				open = append(open, rec)
			}
		}
	}
	return open, nil
}

// roundRecords lists fn's records enqueued before r's load ended (the
// chaos function's are all the rounds' so far; the timer's keep coming).
func (c *cluster) roundRecords(r *round, fn string) ([]*record.Record, error) {
	var out []*record.Record
	cursor := ""
	for {
		page, next, err := c.records.List(context.Background(), record.Filter{Function: fn}, 200, cursor)
		if err != nil {
			return nil, err
		}
		for _, rec := range page {
			at, err := time.Parse(time.RFC3339Nano, rec.EnqueueTime)
			if err != nil || !at.After(r.loadEnd) {
				out = append(out, rec)
			}
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// deadTokens are the tokens (and timer request ids) in the dead-letter list.
func (c *cluster) deadTokens() map[string]bool {
	out := map[string]bool{}
	cursor := ""
	for {
		page, next, err := c.dlq.List(context.Background(), 500, cursor)
		if err != nil {
			return out
		}
		for _, e := range page {
			tokens := tokenRE.FindAllString(e.Body.ClientContext, -1)
			for _, tok := range tokens {
				out[tok] = true
			}
			if len(tokens) == 0 {
				out["timer:"+e.RequestId] = true
			}
		}
		if next == "" {
			return out
		}
		cursor = next
	}
}

func (c *cluster) tally(r *round) []tally {
	dead := c.deadTokens()
	rows := make([]tally, len(sources)+1)
	count := func(src int, token string) {
		row := &rows[src]
		row.accepted++
		switch n := c.col.count(token); {
		case n == 1:
			row.once++
		case n > 1:
			row.twice++
		case dead[token]:
			row.dead++
		default:
			row.lost++
		}
	}
	r.mu.Lock()
	for src, n := range r.produced {
		rows[src].produced = n
	}
	for token, src := range r.accepted {
		count(src, token)
	}
	r.mu.Unlock()
	// Timer instants: produced and accepted are the instants recorded in
	// the round's window.
	timer := len(sources) - 1
	if recs, err := c.roundRecords(r, "chaos-timer"); err == nil {
		for _, rec := range recs {
			at, _ := time.Parse(time.RFC3339Nano, rec.EnqueueTime)
			if at.Before(r.start) {
				continue
			}
			rows[timer].produced++
			count(timer, "timer:"+rec.RequestId)
		}
	}
	if open, err := c.openRecords(r); err == nil {
		for _, rec := range open {
			src := 0
			if rec.FunctionName == "chaos-timer" {
				src = timer
			}
			rows[src].stuck++
		}
	}
	sum := &rows[len(sources)]
	for _, row := range rows[:len(sources)] {
		sum.produced += row.produced
		sum.accepted += row.accepted
		sum.once += row.once
		sum.twice += row.twice
		sum.lost += row.lost
		sum.dead += row.dead
		sum.stuck += row.stuck
	}
	return rows
}

func (r *round) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#### %d. %s\n\n", r.n, r.fault)
	fmt.Fprintf(&b, "| source | produced | accepted | ran once | ran twice | lost | dead-lettered | not final |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, row := range r.rows {
		name := "**all**"
		if i < len(sources) {
			name = sources[i].name
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d |\n", name, row.produced, row.accepted, row.once, row.twice, row.lost, row.dead, row.stuck)
	}
	fmt.Fprintf(&b, "\nSettled %.0f s after the load ended.\n", r.drain.Seconds())
	return b.String()
}

const (
	beginMark = "<!-- chaos:begin (written by `task chaos`) -->"
	endMark   = "<!-- chaos:end -->"
)

func writeReport(path string, rounds []*round, total int) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "\n\nRun of %s on %s (%d CPUs): %d faults, %d events accepted in all.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, numCPU(), len(rounds), total)
	sorted := append([]*round(nil), rounds...)
	sort.SliceStable(sorted, func(a, b int) bool { return sorted[a].n < sorted[b].n })
	for _, r := range sorted {
		b.WriteString(r.table())
		b.WriteString("\n")
	}
	return testenv.ReplaceSection(path, beginMark, endMark, b.String())
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
