package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// On a real Redis Cluster (3 masters, a replica each) every path that
// writes several keys at once works: a plain and an idempotent (scripted)
// submission, a batch, wait_replicas, a retried failure into the dead
// letters, logs, listings, the cluster view. jobgate's keys share asynq's
// queue's slot; the logs spread by instance.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	rc := testenv.StartRedisCluster(t, 3, 1)
	once := 1
	cfg := s.Config(t, "",
		config.Function{Name: "hello", Image: ref, Args: []string{"event", "echo", "done"}},
		config.Function{Name: "broken", Image: ref, Args: []string{"exit", "3"}, Retry: config.Retry{Max: &once, DelayS: 1}})
	cfg.Redis = config.Redis{Prefix: "jobgate", Cluster: &config.RedisCluster{Addrs: rc.Addrs()[:1]}, WaitReplicas: 1, WaitTimeoutMs: 5000}
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	ctx := context.Background()

	plain := st.Invoke(t, "hello", "?wait=none", []byte(`{"n":1}`), http.StatusAccepted)
	code, body := st.Do(t, http.MethodPost, "/v1/functions/hello/invoke?wait=none", []byte(`{"n":2}`), map[string]string{"Idempotency-Key": "k1"})
	if code != http.StatusAccepted {
		t.Fatalf("keyed invoke: %d %s", code, body)
	}
	var keyed record.Record
	if err := json.Unmarshal(body, &keyed); err != nil {
		t.Fatal(err)
	}
	code, body = st.Do(t, http.MethodPost, "/v1/functions/hello/invoke-batch?wait=none", []byte(`[{"n":3},{"n":4}]`), nil)
	if code != http.StatusAccepted {
		t.Fatalf("batch: %d %s", code, body)
	}
	var batch struct{ RequestIds []string }
	if err := json.Unmarshal(body, &batch); err != nil || len(batch.RequestIds) != 2 {
		t.Fatalf("batch answer %s: %v", body, err)
	}
	failed := st.Invoke(t, "broken", "?wait=none", []byte(`{}`), http.StatusAccepted)

	ids := append([]string{plain.RequestId, keyed.RequestId}, batch.RequestIds...)
	// The listing indexes share the records' slot and are written in the
	// same transaction: right after the 202s the listing has every one,
	// and every entry it lists exists (no repair window on Cluster).
	code, body = st.Do(t, http.MethodGet, "/v1/invocations?limit=100", nil, nil)
	var listed struct{ Invocations []record.Record }
	if err := json.Unmarshal(body, &listed); code != http.StatusOK || err != nil || len(listed.Invocations) != len(ids)+1 {
		t.Fatalf("listing right after the 202s: %d %s", code, body)
	}
	for _, rec := range listed.Invocations {
		if _, err := st.Records.Get(ctx, rec.RequestId); err != nil {
			t.Errorf("listed %s: %v", rec.RequestId, err)
		}
	}
	for i, id := range ids {
		if end := st.WaitEnd(t, id, time.Minute); end.Status != record.Finished {
			t.Fatalf("%s: %+v", id, end)
		}
		if out := st.Stdout(t, id); len(out) != 2 || out[0] != fmt.Sprintf(`{"n":%d}`, i+1) || out[1] != "done" {
			t.Errorf("%s stdout %q", id, out)
		}
	}
	if end := st.WaitEnd(t, failed.RequestId, time.Minute); end.Status != record.Failed || end.Attempt != 2 {
		t.Fatalf("broken: %+v", end)
	}
	testenv.EventuallyNoError(t, 30*time.Second, "the dead letter", func() error {
		code, body := st.Do(t, http.MethodGet, "/v1/deadletters/"+failed.RequestId, nil, nil)
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	// A resend of the keyed one is answered with the same invocation.
	code, body = st.Do(t, http.MethodPost, "/v1/functions/hello/invoke?wait=none", []byte(`{"n":2}`), map[string]string{"Idempotency-Key": "k1"})
	if code != http.StatusAccepted || !strings.Contains(string(body), keyed.RequestId) {
		t.Fatalf("resend: %d %s", code, body)
	}
	code, body = st.Do(t, http.MethodGet, "/v1/invocations?function=hello", nil, nil)
	for _, id := range ids {
		if code != http.StatusOK || !strings.Contains(string(body), id) {
			t.Fatalf("listing lacks %s: %d %s", id, code, body)
		}
	}
	code, body = st.Do(t, http.MethodGet, "/v1/cluster", nil, nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"Node":"test-node"`) {
		t.Fatalf("cluster view: %d %s", code, body)
	}

	// Where the keys are: the record and asynq's queue in one slot, the
	// log in its instance's.
	keys := keyspace.New(cfg.Redis.KeyPrefix())
	cc := st.Node.Redis().(*redis.ClusterClient)
	slot := func(key string) int64 {
		n, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	q := slot(keyspace.AsynqPending(queue.Name))
	inst := record.InstanceID(plain.RequestId, 1)
	for _, k := range []string{keys.Record(plain.RequestId), keys.Event(plain.RequestId), keys.Index(""), keys.Pending(), keys.Running(), keys.Node("test-node"), keys.DeadLetter(failed.RequestId)} {
		if got := slot(k); got != q {
			t.Errorf("%s in slot %d, the queue's is %d", k, got, q)
		}
	}
	if a, b := slot(keys.Log(inst)), slot(keys.LogMeta(inst)); a != b || a != slot(inst) {
		t.Errorf("log slots %d, %d; the instance's %d", a, b, slot(inst))
	}
	if n, err := cc.Exists(ctx, keys.Log(inst)).Result(); err != nil || n != 1 {
		t.Errorf("log key %s: %d %v", keys.Log(inst), n, err)
	}
}
