package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/logstore"
	"github.com/jobgate/jobgate/internal/node"
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

// StartStackWith starts a node for cfg with the given options.
func StartStackWith(t testing.TB, s *Services, cfg *config.Config, o node.Options) *Stack {
	t.Helper()
	o.Logger = Logger(t)
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
		Records: record.NewStore(n.Redis(), cfg.Redis.Prefix, cfg.Retention()),
		Logs:    logstore.NewStore(n.Redis(), cfg.Redis.Prefix, cfg.Retention(), cfg.Worker.LogMaxBytes)}
	if n.Gateway != nil {
		st.URL = "http://" + n.Gateway.Addr()
	}
	return st
}

// WaitEnd polls the record until it is terminal.
func (st *Stack) WaitEnd(t testing.TB, id string, timeout time.Duration) *record.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := st.Records.Get(context.Background(), id)
		if err == nil && r.Status.Terminal() {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("invocation %s did not end within %s (last: %+v, err %v)", id, timeout, r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
