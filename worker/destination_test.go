package worker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers/httptrigger"
	"github.com/jobgate/jobgate/worker"
)

// A final status reaches its destinations: FINISHED goes to a signed URL
// and to another function (whose event is the result), once each; a
// FAILED one goes to a URL that keeps failing, is retried with backoff
// and then dead-lettered; the record shows each delivery's state.
func TestDestinations(t *testing.T) {
	t.Setenv("DEST_SECRET", "s3cret")
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	type delivery struct {
		path, id, ts, sig string
		body              []byte
	}
	var mu sync.Mutex
	var got []delivery
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, delivery{r.URL.Path, r.Header.Get("X-Jobgate-Delivery"), r.Header.Get("X-Jobgate-Timestamp"), r.Header.Get("X-Jobgate-Signature"), b})
		mu.Unlock()
		if r.URL.Path == "/fail" {
			http.Error(w, "not today", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	to := func(path string) []delivery {
		mu.Lock()
		defer mu.Unlock()
		var out []delivery
		for _, d := range got {
			if d.path == path {
				out = append(out, d)
			}
		}
		return out
	}
	none, one := 0, 1
	st := testenv.StartStack(t,
		config.Function{Name: "ok", Image: ref, Args: []string{"echo", "hello"},
			OnSuccess: []config.Destination{{URL: srv.URL + "/ok", SecretEnv: "DEST_SECRET"}, {Function: "sink"}},
			OnFailure: []config.Destination{{URL: srv.URL + "/never"}}},
		config.Function{Name: "bad", Image: ref, Args: []string{"stderr", "oops", "exit", "3"}, Retry: config.Retry{Max: &none},
			OnFailure: []config.Destination{{URL: srv.URL + "/fail", RetryMax: &one}}},
		config.Function{Name: "sink", Image: ref, Args: []string{"event"}})

	ok := st.Invoke(t, "ok", "?wait=none", []byte(`{"n":1}`), http.StatusAccepted)
	bad := st.Invoke(t, "bad", "?wait=none", []byte(`{"n":2}`), http.StatusAccepted)
	if end := st.WaitEnd(t, ok.RequestId, time.Minute); end.Status != record.Finished {
		t.Fatalf("ok: %+v", end)
	}
	if end := st.WaitEnd(t, bad.RequestId, time.Minute); end.Status != record.Failed {
		t.Fatalf("bad: %+v", end)
	}

	// The signed URL: one POST, the signature verifies, the result says it all.
	okDelivery := queue.Destination{RequestId: ok.RequestId, Function: "ok", Attempt: 1, Success: true, Index: 0}
	testenv.Eventually(t, 30*time.Second, "the success delivery", func() bool { return len(to("/ok")) == 1 })
	d := to("/ok")[0]
	ts, _ := strconv.ParseInt(d.ts, 10, 64)
	if d.id != okDelivery.ID() || d.sig != httptrigger.SignJobgate("s3cret", http.MethodPost, "/ok", ts, d.body) {
		t.Errorf("delivery %s signed %q (ts %s)", d.id, d.sig, d.ts)
	}
	var res worker.Result
	if err := json.Unmarshal(d.body, &res); err != nil {
		t.Fatal(err)
	}
	sch, err := schemas.Compile(schemas.DestinationResult)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := schemas.Validate(sch, inst); err != nil || len(vs) > 0 {
		t.Errorf("result against its schema: %v %v", vs, err)
	}
	if res.RequestId != ok.RequestId || res.Condition != "Success" || res.Status != record.Finished || res.StatusCode != 200 ||
		string(res.Event) != `{"n":1}` || !strings.Contains(strings.Join(res.LogTail, "\n"), "stdout hello") {
		t.Errorf("result %s", d.body)
	}
	// The function: an invocation whose event is the result.
	sinkID := submit.DeriveRequestID("destination", queue.Destination{RequestId: ok.RequestId, Function: "ok", Attempt: 1, Success: true, Index: 1}.ID())
	if end := st.WaitEnd(t, sinkID, time.Minute); end.Status != record.Finished || end.RequestSource != "Destination" {
		t.Fatalf("sink: %+v", end)
	}
	if out := st.Stdout(t, sinkID); len(out) != 1 || !strings.Contains(out[0], `"RequestId":"`+ok.RequestId+`"`) {
		t.Errorf("sink saw %q", out)
	}
	testenv.EventuallyNoError(t, 30*time.Second, "the deliveries recorded", func() error {
		rec, err := st.Records.Get(t.Context(), ok.RequestId)
		if err != nil {
			return err
		}
		want := []record.DestinationStatus{{Target: srv.URL + "/ok", Status: "DELIVERED", Attempts: 1}, {Target: "function:sink", Status: "DELIVERED", Attempts: 1}}
		if len(rec.Destinations) != 2 || rec.Destinations[0] != want[0] || rec.Destinations[1] != want[1] {
			return &mismatch{rec.Destinations}
		}
		return nil
	})

	// The failing URL: tried twice (retry_max 1), then dead-lettered.
	badDelivery := queue.Destination{RequestId: bad.RequestId, Function: "bad", Attempt: 1, Index: 0}
	dlq := deadletter.NewStore(st.Node.Redis(), st.Config.Redis.KeyPrefix()+":destination", deadletter.Limits{Retention: time.Hour, Max: 100})
	testenv.EventuallyNoError(t, time.Minute, "the failed delivery dead-lettered", func() error {
		_, err := dlq.Get(t.Context(), badDelivery.ID())
		return err
	})
	if n := len(to("/fail")); n != 2 {
		t.Errorf("the failing URL was tried %d times, want 2", n)
	}
	// The record's delivery state is written just after the dead letter.
	testenv.EventuallyNoError(t, 30*time.Second, "bad's delivery recorded FAILED", func() error {
		rec, err := st.Records.Get(t.Context(), bad.RequestId)
		if err != nil || len(rec.Destinations) != 1 || rec.Destinations[0].Status != "FAILED" || rec.Destinations[0].Attempts != 2 ||
			!strings.Contains(rec.Destinations[0].Error, "500") {
			return fmt.Errorf("bad's deliveries: %+v %v", rec, err)
		}
		return nil
	})
	if len(to("/never")) != 0 {
		t.Error("a FINISHED invocation was delivered to on_failure")
	}

	// The destinations' dead letters through the API: listed, shown, and
	// redriven (delivered again with its retries: two more tries, then
	// dead-lettered again).
	code, body := st.Do(t, http.MethodGet, "/v1/deadletters?kind=destination", nil, nil)
	if code != http.StatusOK || !strings.Contains(string(body), badDelivery.ID()) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := st.Do(t, http.MethodGet, "/v1/deadletters/"+badDelivery.ID()+"?kind=destination", nil, nil); code != http.StatusOK || !strings.Contains(string(body), "answered 500") {
		t.Fatalf("get: %d %s", code, body)
	}
	if code, body := st.Do(t, http.MethodGet, "/v1/deadletters?kind=nope", nil, nil); code != http.StatusBadRequest {
		t.Fatalf("bad kind: %d %s", code, body)
	}
	if code, body := st.Do(t, http.MethodPost, "/v1/deadletters/"+badDelivery.ID()+"/redrive?kind=destination", nil, nil); code != http.StatusAccepted {
		t.Fatalf("redrive: %d %s", code, body)
	}
	testenv.Eventually(t, time.Minute, "the redriven delivery tried twice more", func() bool { return len(to("/fail")) == 4 })
	testenv.EventuallyNoError(t, time.Minute, "dead-lettered again", func() error {
		_, err := dlq.Get(t.Context(), badDelivery.ID())
		return err
	})

	// An event too large to carry: the result refers to it.
	big := []byte(`{"data":"` + strings.Repeat("x", worker.MaxResultEvent) + `"}`)
	large := st.Invoke(t, "ok", "?wait=none", big, http.StatusAccepted)
	testenv.Eventually(t, time.Minute, "the large event's delivery", func() bool { return len(to("/ok")) == 2 })
	var withRef worker.Result
	if err := json.Unmarshal(to("/ok")[1].body, &withRef); err != nil || withRef.RequestId != large.RequestId || withRef.Event != nil ||
		withRef.EventBytes != len(big) || withRef.EventRef != "/v1/invocations/"+large.RequestId+"/event" {
		t.Fatalf("large event's result: %+v %v", withRef, err)
	}
	if code, body := st.Do(t, http.MethodGet, withRef.EventRef, nil, nil); code != http.StatusOK || string(body) != string(big) {
		t.Fatalf("GET %s: %d, %d bytes", withRef.EventRef, code, len(body))
	}
}

type mismatch struct{ got []record.DestinationStatus }

func (m *mismatch) Error() string { b, _ := json.Marshal(m.got); return "deliveries " + string(b) }

// A URL destination follows no redirect (a 307 to the local invoke API
// ran the target on the main of 2026-12-04), keeps the answer's body out
// of the record, refuses loopback/private addresses not in
// worker.destinations.allow at dial time, and shows its URL without
// credentials, query or secret path.
func TestDestinationsAreNoSSRF(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	var gatewayURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, gatewayURL+"/v1/functions/victim/invoke?wait=none", http.StatusTemporaryRedirect)
		default:
			http.Error(w, "INTERNAL SECRET PAGE", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(srv.Close)
	// A receiver on 127.0.0.2: loopback, but not in the allow list.
	other, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	go http.Serve(other, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(func() { other.Close() })
	creds := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/hook/T0KEN-SECRET/x?sig=abc"
	none := 0
	fn := func(name, url string) config.Function {
		return config.Function{Name: name, Image: ref, Args: []string{"exit", "0"},
			OnSuccess: []config.Destination{{URL: url, RetryMax: &none}}}
	}
	cfg := s.Config(t, testenv.Redis(t), fn("redir", srv.URL+"/redirect"), fn("leak", srv.URL+"/page"),
		fn("private", "http://"+other.Addr().String()+"/"), fn("creds", creds),
		config.Function{Name: "victim", Image: ref, Args: []string{"exit", "0"}})
	cfg.Worker.Destinations.Allow = []string{"127.0.0.1/32"}
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	gatewayURL = st.URL
	errorOf := func(fn string) string {
		t.Helper()
		rec := st.Invoke(t, fn, "?wait=none", []byte(`{}`), http.StatusAccepted)
		var got record.DestinationStatus
		testenv.EventuallyNoError(t, time.Minute, fn+"'s delivery to fail", func() error {
			r, err := st.Records.Get(t.Context(), rec.RequestId)
			if err == nil && (len(r.Destinations) != 1 || r.Destinations[0].Status != "FAILED") {
				err = fmt.Errorf("deliveries %+v", r.Destinations)
			}
			if err == nil {
				got = r.Destinations[0]
			}
			return err
		})
		return got.Target + " | " + got.Error
	}
	if e := errorOf("redir"); !strings.Contains(e, "answered 307 (redirects are not followed)") {
		t.Errorf("redirect: %s", e)
	}
	if e := errorOf("leak"); !strings.Contains(e, "answered 500") || strings.Contains(e, "SECRET") {
		t.Errorf("an answer's body came back: %s", e)
	}
	if e := errorOf("private"); !strings.Contains(e, "refused") || hits.Load() != 0 {
		t.Errorf("a private address not in the allow list: %s (%d hits)", e, hits.Load())
	}
	if e := errorOf("creds"); strings.Contains(e, "hunter2") || strings.Contains(e, "T0KEN") || strings.Contains(e, "sig=") || !strings.Contains(e, "/hook/…") {
		t.Errorf("the URL's secrets are shown: %s", e)
	}
	code, body := st.Do(t, http.MethodGet, "/v1/invocations?function=victim", nil, nil)
	if code != 200 || strings.Contains(string(body), `"RequestId"`) {
		t.Errorf("the redirect target ran: %d %s", code, body)
	}
}
