package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// jobImage pushes the scriptable test job once per registry.
func jobImage(t *testing.T) string {
	t.Helper()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

type apiErr struct {
	Error struct {
		Code    string
		Message string
	}
	RequestId string
}

func decodeErr(t *testing.T, body []byte) apiErr {
	t.Helper()
	var e apiErr
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("not an API error body: %s (%v)", body, err)
	}
	return e
}

func TestInvokeErrors(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t)})
	cases := []struct {
		name, fn string
		body     string
		status   int
		code     string
	}{
		{"not JSON", "fn", `{"a":`, 400, "InvalidParameterValue"},
		{"array, not object", "fn", `[1,2]`, 400, "InvalidParameterValue"},
		{"string, not object", "fn", `"x"`, 400, "InvalidParameterValue"},
		{"empty body", "fn", ``, 400, "InvalidParameterValue"},
		{"unknown function", "nope", `{}`, 404, "FunctionNotFound"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := st.Do(t, "POST", "/v1/functions/"+c.fn+"/invoke", []byte(c.body), nil)
			if code != c.status {
				t.Fatalf("status %d, want %d: %s", code, c.status, body)
			}
			if e := decodeErr(t, body); e.Error.Code != c.code {
				t.Fatalf("code %s, want %s", e.Error.Code, c.code)
			}
		})
	}
	if code, body := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=maybe", []byte(`{}`), nil); code != 400 {
		t.Fatalf("bad wait: %d %s", code, body)
	}
	if code, _ := st.Do(t, "GET", "/v1/invocations/00000000-0000-0000-0000-000000000000", nil, nil); code != 404 {
		t.Fatalf("unknown invocation: %d", code)
	}
	// Nothing above may have created a record.
	code, body := st.Do(t, "GET", "/v1/invocations", nil, nil)
	if code != 200 || !bytes.Contains(body, []byte(`"Invocations":[]`)) {
		t.Fatalf("list after bad requests: %d %s", code, body)
	}
}

// eventOfSize returns a JSON object of exactly n bytes.
func eventOfSize(n int) []byte {
	const head, tail = `{"pad":"`, `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

func TestEventSizeEdges(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"eventsum"}})

	// The largest event: SCF_CUSTOM_CONTAINER_EVENT=<event> is exactly
	// 131071 bytes, 131072 with its NUL: the kernel's limit. It must start.
	max := eventOfSize(jobenv.MaxEventBytes)
	if got := len("SCF_CUSTOM_CONTAINER_EVENT=") + len(max); got != 131071 {
		t.Fatalf("edge arithmetic: %d", got)
	}
	rec := st.Invoke(t, "fn", "", max, 200)
	end := st.WaitEnd(t, rec.RequestId, 30*time.Second)
	if end.Status != record.Finished {
		t.Fatalf("max-size event: %+v", end)
	}
	out := st.Stdout(t, rec.RequestId)
	if len(out) != 1 || !strings.HasPrefix(out[0], fmt.Sprintf("len=%d ", jobenv.MaxEventBytes)) {
		t.Fatalf("container saw %v", out)
	}

	// One byte more is refused at the door, naming the limit.
	code, body := st.Do(t, "POST", "/v1/functions/fn/invoke", eventOfSize(jobenv.MaxEventBytes+1), nil)
	if code != 413 {
		t.Fatalf("max+1: status %d: %s", code, body)
	}
	e := decodeErr(t, body)
	if e.Error.Code != "EventTooLarge" || !strings.Contains(e.Error.Message, "131072") {
		t.Fatalf("max+1 error: %+v", e)
	}
}

func TestFunctionEnvCountsTowardsTotal(t *testing.T) {
	t.Parallel()
	// A function env that leaves ~1 KiB of the 2 MiB total: a 2 KiB
	// event no longer fits, and the gateway says so before queueing.
	env := map[string]string{}
	total := 0
	for i := 0; total < jobenv.MaxTotal-140_000; i++ {
		v := strings.Repeat("e", 120_000)
		k := fmt.Sprintf("BIG_%02d", i)
		env[k] = v
		total += len(k) + 1 + len(v) + 1
	}
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Env: env, Args: []string{"envsum"}})
	room := jobenv.MaxTotal - total
	code, body := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=none", eventOfSize(room), nil)
	if code != 413 || !strings.Contains(string(body), "2097152") {
		t.Fatalf("over total: %d %s", code, body)
	}
	// A small event fits, and the container really starts with ~2 MiB of
	// environment (RLIMIT_STACK is raised for it).
	rec := st.Invoke(t, "fn", "", []byte(`{}`), 200)
	end := st.WaitEnd(t, rec.RequestId, 30*time.Second)
	if end.Status != record.Finished {
		t.Fatalf("near-2MiB env: %+v\n%v", end, st.Lines(t, rec.RequestId))
	}
	out := st.Stdout(t, rec.RequestId)
	if len(out) != 1 || !strings.HasPrefix(out[0], "envtotal=") {
		t.Fatalf("envsum: %v", out)
	}
	var n int
	fmt.Sscanf(out[0], "envtotal=%d", &n)
	if n < total || n > jobenv.MaxTotal {
		t.Fatalf("container env total %d, want between %d and %d", n, total, jobenv.MaxTotal)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "fn", Image: jobImage(t)})
	st := testenv.StartStackWith(t, s, cfg, node.Options{Tokens: []string{"t0k3n", "other"}})
	for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Authorization": "t0k3n"}} {
		code, body := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=none", []byte(`{}`), hdr)
		if code != 401 || decodeErr(t, body).Error.Code != "AuthFailure" {
			t.Fatalf("%v: %d %s", hdr, code, body)
		}
		if code, _ := st.Do(t, "GET", "/v1/invocations", nil, hdr); code != 401 {
			t.Fatalf("list with %v: %d", hdr, code)
		}
	}
	code, body := st.Do(t, "POST", "/v1/functions/fn/invoke?wait=none", []byte(`{}`), map[string]string{"Authorization": "Bearer other"})
	if code != 202 {
		t.Fatalf("good token: %d %s", code, body)
	}
	if code, _ := st.Do(t, "GET", "/healthz", nil, nil); code != 200 {
		t.Fatalf("healthz needs no token: %d", code)
	}
}

func TestWaitModesAndIdempotency(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran", "sleep", "2s"}})

	// wait=none: 202 once queued.
	rec := st.Invoke(t, "fn", "?wait=none", []byte(`{}`), 202)
	if rec.Status != record.Pending || rec.StatusCode != 202 || rec.RequestId == "" {
		t.Fatalf("wait=none record: %+v", rec)
	}
	// wait=scheduled (default): 200 once started, still running.
	rec2 := st.Invoke(t, "fn", "", []byte(`{}`), 200)
	if rec2.Status != record.Running || rec2.StartTime == "" || rec2.ImageDigest == "" || rec2.Node != "test-node" {
		t.Fatalf("wait=scheduled record: %+v", rec2)
	}

	// Idempotency-Key: same key and event → same RequestId, one run; the
	// key with another event → 409 (not the old run).
	hdr := map[string]string{"Idempotency-Key": "order-42"}
	code, b1 := st.Do(t, "POST", "/v1/functions/fn/invoke", []byte(`{"n":1}`), hdr)
	code2, b2 := st.Do(t, "POST", "/v1/functions/fn/invoke", []byte(`{"n":1}`), hdr)
	if code != 200 || code2 != 200 {
		t.Fatalf("idempotent invokes: %d %s / %d %s", code, b1, code2, b2)
	}
	if code3, b3 := st.Do(t, "POST", "/v1/functions/fn/invoke", []byte(`{"n":2}`), hdr); code3 != 409 || !strings.Contains(string(b3), `"IdempotencyKeyReused"`) {
		t.Fatalf("key reused with another event: %d %s", code3, b3)
	}
	var r1, r2 record.Record
	_ = json.Unmarshal(b1, &r1)
	_ = json.Unmarshal(b2, &r2)
	if r1.RequestId == "" || r1.RequestId != r2.RequestId {
		t.Fatalf("idempotency: %s vs %s", r1.RequestId, r2.RequestId)
	}
	for _, id := range []string{rec.RequestId, rec2.RequestId, r1.RequestId} {
		if end := st.WaitEnd(t, id, 30*time.Second); end.Status != record.Finished {
			t.Fatalf("%s: %+v", id, end)
		}
	}
	starts := 0
	for _, l := range st.Lines(t, r1.RequestId) {
		if strings.HasPrefix(l.Line, "START ") {
			starts++
		}
	}
	if starts != 1 {
		t.Fatalf("idempotent key started %d times", starts)
	}
	// The event of the first call is the one that ran.
	ev, err := st.Records.Event(t.Context(), r1.RequestId)
	if err != nil || string(ev) != `{"n":1}` {
		t.Fatalf("stored event %q %v", ev, err)
	}
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "a", Image: jobImage(t)}, config.Function{Name: "b", Image: jobImage(t)})
	var ids []string
	for i := 0; i < 5; i++ {
		fn := "a"
		if i%2 == 1 {
			fn = "b"
		}
		ids = append(ids, st.Invoke(t, fn, "?wait=none", []byte(`{}`), 202).RequestId)
	}
	type page struct {
		Invocations []record.Record
		NextCursor  string
	}
	get := func(q string) page {
		code, body := st.Do(t, "GET", "/v1/invocations?"+q, nil, nil)
		if code != 200 {
			t.Fatalf("list %s: %d %s", q, code, body)
		}
		var p page
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var got []string
	cursor := ""
	for {
		p := get("limit=2&cursor=" + cursor)
		for _, r := range p.Invocations {
			got = append(got, r.RequestId)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]} // newest first
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pages:\n got %v\nwant %v", got, want)
	}
	p := get("function=b")
	if len(p.Invocations) != 2 || p.Invocations[0].RequestId != ids[3] || p.NextCursor != "" {
		t.Fatalf("function filter: %+v", p)
	}
	for _, id := range ids {
		st.WaitEnd(t, id, 30*time.Second)
	}
	if p := get("status=FINISHED&limit=100"); len(p.Invocations) != 5 {
		t.Fatalf("status filter: %d", len(p.Invocations))
	}
	if p := get("status=RUNNING"); len(p.Invocations) != 0 {
		t.Fatalf("RUNNING filter: %+v", p)
	}
	if code, _ := st.Do(t, "GET", "/v1/invocations?status=DONE", nil, nil); code != 400 {
		t.Fatalf("bad status accepted")
	}
}

func TestRedisDownIs503(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	redis := testenv.StartRedis(t)
	cfg := s.Config(t, redis.Addr, config.Function{Name: "fn", Image: jobImage(t)})
	st := testenv.StartStackWith(t, s, cfg, node.Options{Role: node.RoleGateway})
	redis.Kill()
	for _, q := range []string{"?wait=none", ""} {
		code, body := st.Do(t, "POST", "/v1/functions/fn/invoke"+q, []byte(`{}`), nil)
		if code != 503 || decodeErr(t, body).Error.Code != "QueueUnavailable" {
			t.Fatalf("redis down %s: %d %s", q, code, body)
		}
	}
	if code, _ := st.Do(t, "GET", "/readyz", nil, nil); code != 503 {
		t.Fatalf("readyz with redis down: %d", code)
	}
}

func TestLogsFollow(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "one", "sleep", "1s", "stderr", "two"}})
	rec := st.Invoke(t, "fn", "", []byte(`{}`), 200)
	resp, err := http.Get(st.URL + "/v1/invocations/" + rec.RequestId + "/logs?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	dec := json.NewDecoder(resp.Body)
	var lines []string
	for dec.More() {
		var l struct{ TS, Stream, Line string }
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		if _, err := time.Parse(time.RFC3339Nano, l.TS); err != nil {
			t.Fatalf("ts %q: %v", l.TS, err)
		}
		lines = append(lines, l.Stream+" "+strings.SplitN(l.Line, " ", 2)[0])
	}
	want := "platform START|stdout one|stderr two|platform END|platform Report"
	if got := strings.Join(lines, "|"); got != want {
		t.Fatalf("followed log:\n got %s\nwant %s", got, want)
	}
	if r, _ := st.Records.Get(t.Context(), rec.RequestId); !r.Status.Terminal() {
		t.Fatalf("follow ended before the record did: %+v", r)
	}
}
