package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/record"
)

// Stack is a running in-process jobgate (gateway + worker) for one test.
type Stack struct {
	*Services
	Config  *config.Config
	Node    *node.Node
	URL     string // gateway base URL
	Records *record.Store
	Logs    *logstore.Store
}

// StartStack starts jobgate serve's roles in-process against fresh Redis,
// the shared containerd and registry. It is stopped at test cleanup.
func StartStack(t testing.TB, fns ...config.Function) *Stack {
	t.Helper()
	s := Shared(t)
	cfg := s.Config(t, Redis(t), fns...)
	return StartStackWith(t, s, cfg, node.Options{})
}

// StartStackWith starts a node for cfg with the given options; it logs
// to t.
func StartStackWith(t testing.TB, s *Services, cfg *config.Config, o node.Options) *Stack {
	t.Helper()
	o.Logger = Logger(t)
	return StartStackLogged(t, s, cfg, o)
}

// StartStackLogged starts a node for cfg with o as given, o.Logger
// included (benchmarks log as production does, not to t).
func StartStackLogged(t testing.TB, s *Services, cfg *config.Config, o node.Options) *Stack {
	t.Helper()
	ctx := context.Background()
	n, err := node.New(ctx, cfg, o)
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Logf("stop node: %v", err)
		}
	})
	st := &Stack{Services: s, Config: cfg, Node: n,
		Records: record.NewStore(n.Redis(), cfg.Redis.KeyPrefix(), cfg.Retention()),
		Logs:    logstore.NewStore(n.Redis(), cfg.Redis.KeyPrefix(), cfg.Retention(), cfg.Worker.LogMaxBytes)}
	if n.Gateway != nil {
		st.URL = "http://" + n.Gateway.Addr()
	}
	return st
}

// WaitEnd polls the record until it is terminal.
func (st *Stack) WaitEnd(t testing.TB, id string, timeout time.Duration) *record.Record {
	t.Helper()
	var r *record.Record
	EventuallyNoError(t, timeout, "invocation "+id+" to end", func() error {
		var err error
		if r, err = st.Records.Get(context.Background(), id); err == nil && !r.Status.Terminal() {
			err = fmt.Errorf("status %s: %s", r.Status, r.Message)
		}
		return err
	})
	return r
}

// Lines returns the log lines of id.
func (st *Stack) Lines(t testing.TB, id string) []logstore.Line {
	t.Helper()
	ls, _, err := st.Logs.Lines(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// Do sends an HTTP request to the gateway and returns status and body.
func (st *Stack) Do(t testing.TB, method, path string, body []byte, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, st.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// Invoke posts event to fn and decodes the record answer; it fails the
// test unless the status is want.
func (st *Stack) Invoke(t testing.TB, fn, query string, event []byte, want int) *record.Record {
	t.Helper()
	code, body := st.Do(t, http.MethodPost, "/v1/functions/"+fn+"/invoke"+query, event, nil)
	if code != want {
		t.Fatalf("invoke %s%s: status %d, want %d: %s", fn, query, code, want, body)
	}
	var rec record.Record
	if err := json.Unmarshal(body, &rec); err != nil {
		t.Fatalf("invoke answer %s: %v", body, err)
	}
	return &rec
}

// Stdout returns the stdout lines of id's log.
func (st *Stack) Stdout(t testing.TB, id string) []string {
	t.Helper()
	var out []string
	for _, l := range st.Lines(t, id) {
		if l.Stream == logstore.Stdout {
			out = append(out, l.Line)
		}
	}
	return out
}

// RecordStore opens the record store of a config's Redis (for tests of
// `jobgate serve` subprocesses).
func RecordStore(t testing.TB, redisAddr string, cfg *config.Config) *record.Store {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	return record.NewStore(rdb, cfg.Redis.KeyPrefix(), cfg.Retention())
}
