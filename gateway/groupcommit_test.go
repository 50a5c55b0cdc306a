package gateway_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// Group commit keeps the submit guarantee (issue 13): Redis (AOF,
// appendfsync always) is SIGKILLed while single and batch invocations
// are in flight, and kept down until some are refused. Every request
// answered 202 runs, once; every request answered 503 left nothing
// behind (no record, no task); nothing is answered anything else.
func TestRedisKilledMidFlush(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	redis := testenv.StartRedisAOF(t, "always")
	cfg := s.Config(t, redis.Addr, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran"}, Retry: config.Retry{Max: new(int)}})
	st := testenv.StartStackWith(t, s, cfg, node.Options{})
	client := &http.Client{Timeout: 2 * time.Minute}

	type outcome struct {
		ids  []string
		code int
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		accepted atomic.Int64
		refused  atomic.Int64
	)
	post := func(path, key string, body []byte, ids []string) {
		req, _ := http.NewRequest("POST", st.URL+path, bytes.NewReader(body))
		req.Header.Set("Idempotency-Key", key)
		code := 0
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		switch code {
		case 202:
			accepted.Add(int64(len(ids)))
		case 503:
			refused.Add(1)
		}
		mu.Lock()
		outcomes = append(outcomes, outcome{ids, code})
		mu.Unlock()
	}
	const singles, batches, batchSize = 4, 2, 5
	const rounds = 15
	var load sync.WaitGroup
	for c := range singles + batches {
		load.Add(1)
		go func() {
			defer load.Done()
			for r := range rounds {
				key := fmt.Sprintf("c%d-r%d", c, r)
				if c < singles {
					post("/v1/functions/fn/invoke?wait=none", key, []byte(`{}`), []string{submit.DeriveRequestID("idempotency-key", "fn", key)})
				} else {
					var ids []string
					for i := range batchSize {
						ids = append(ids, submit.DeriveRequestID("idempotency-key-batch", "fn", key, fmt.Sprint(i)))
					}
					post("/v1/functions/fn/invoke-batch", key, []byte("["+strings.TrimSuffix(strings.Repeat(`{},`, batchSize), ",")+"]"), ids)
				}
				time.Sleep(20 * time.Millisecond) // pace the load across the outage
			}
		}()
	}
	testenv.Eventually(t, time.Minute, "some invocations accepted", func() bool { return accepted.Load() >= 20 })
	redis.Kill()
	testenv.Eventually(t, time.Minute, "some requests refused while Redis is down", func() bool { return refused.Load() >= 2 })
	redis.Start(t)
	load.Wait()

	insp := asynq.NewInspectorFromRedisClient(st.Node.Redis())
	var ok, no int
	for _, o := range outcomes {
		switch o.code {
		case 202:
			for _, id := range o.ids {
				if end := st.WaitEnd(t, id, 3*time.Minute); end.Status != record.Finished {
					t.Errorf("accepted %s: %+v", id, end)
				}
				ok++
			}
		case 503:
			for _, id := range o.ids {
				if _, err := st.Records.Get(t.Context(), id); !errors.Is(err, record.ErrNotFound) {
					t.Errorf("refused %s has a record (%v)", id, err)
				}
				if _, err := insp.GetTaskInfo(queue.Name, record.InstanceID(id, 1)); !errors.Is(err, asynq.ErrTaskNotFound) {
					t.Errorf("refused %s has a task (%v)", id, err)
				}
				no++
			}
		default:
			t.Errorf("%v answered %d", o.ids, o.code)
		}
	}
	t.Logf("%d invocations accepted and run, %d refused and absent", ok, no)
	if ok == 0 || no == 0 {
		t.Fatalf("the outage was not exercised: %d accepted, %d refused", ok, no)
	}
}
