package submit_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// The submit path writes first attempts' tasks in asynq's private stored
// form (queue.Encode, keyspace.Submit). This pins that form to the asynq
// in go.mod: the same task enqueued by asynq's client has byte-identical
// message and the same hash fields and list; asynq's Inspector reads the
// written one with every option; asynq's server runs it. An asynq
// upgrade that changes its layout fails here.
func TestEncodedTasksAreAsynqs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	opts := queue.Options{MaxRetry: 1 << 20, Timeout: submit.TaskTimeout(f.cfg), Retention: f.cfg.Retention()}
	// asynq's own enqueue of the task the submit path writes.
	task, aopts, err := queue.NewInvokeTask(queue.Payload{RequestId: "by-asynq", Function: "fn"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(f.rdb).EnqueueContext(ctx, task, aopts...); err != nil {
		t.Fatal(err)
	}
	enc, err := queue.Encode(queue.Payload{RequestId: "by-asynq", Function: "fn"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := f.rdb.HGetAll(ctx, keyspace.AsynqTask(queue.Name, enc.ID)).Result()
	if err != nil || stored["msg"] != string(enc.Message) {
		t.Fatalf("asynq's stored message %x (%v), ours %x", stored["msg"], err, enc.Message)
	}

	res, err := f.sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{"k":1}`), RequestID: "by-jobgate", Source: "API"})
	if err != nil || res.Duplicate {
		t.Fatalf("%+v %v", res, err)
	}
	// A submission without a RequestId takes the script-free path (plain
	// commands in MULTI): the same layout.
	fresh, err := f.sub.Submit(ctx, submit.Request{Function: "fn", Event: []byte(`{"k":2}`), Source: "API"})
	if err != nil || fresh.Duplicate {
		t.Fatalf("%+v %v", fresh, err)
	}
	for _, id := range []string{"by-jobgate", fresh.Record.RequestId} {
		ours, err := f.rdb.HGetAll(ctx, keyspace.AsynqTask(queue.Name, id)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if fields(ours) != fields(stored) || ours["state"] != "pending" {
			t.Fatalf("%s: task hash fields %v, asynq writes %v", id, ours, stored)
		}
		if ev, err := f.records.Event(ctx, id); err != nil || len(ev) != 7 {
			t.Fatalf("%s: event %q %v", id, ev, err)
		}
	}
	if pending, _ := f.rdb.LRange(ctx, keyspace.AsynqPending(queue.Name), 0, -1).Result(); len(pending) != 3 {
		t.Fatalf("pending list %v", pending)
	}
	if member, _ := f.rdb.SIsMember(ctx, keyspace.AsynqQueues, queue.Name).Result(); !member {
		t.Fatal("the queue is not in asynq's queue set")
	}
	info, err := f.insp.GetTaskInfo(queue.Name, "by-jobgate")
	if err != nil {
		t.Fatal(err)
	}
	p, err := queue.Decode(info.ID, asynq.NewTask(info.Type, info.Payload))
	if err != nil || info.Type != queue.TypeFirst || info.State != asynq.TaskStatePending || info.Queue != queue.Name ||
		info.MaxRetry != opts.MaxRetry || info.Timeout != opts.Timeout || info.Retention != opts.Retention ||
		p.RequestId != "by-jobgate" || p.Function != "" || p.Attempt != 1 {
		t.Fatalf("asynq reads %+v (payload %+v, %v)", info, p, err)
	}
	// A first attempt's task (a UUID RequestId, the options the submit
	// path sets) is stored compactly: its message within Redis's
	// hash-max-listpack-value, the hash a listpack, not a hash table.
	key := keyspace.AsynqTask(queue.Name, fresh.Record.RequestId)
	msg, _ := f.rdb.HGet(ctx, key, "msg").Result()
	if enc, err := f.rdb.ObjectEncoding(ctx, key).Result(); err != nil || enc != "listpack" || len(msg) > 64 {
		t.Fatalf("a first attempt's task hash is %q (%v), its message %d bytes", enc, err, len(msg))
	}
	if q, err := f.insp.GetQueueInfo(queue.Name); err != nil || q.Pending != 3 {
		t.Fatalf("queue info %+v %v", q, err)
	}

	// A delayed one is written as asynq's schedule writes a task: state
	// scheduled, in the scheduled set at its Unix second.
	due := time.Now().Add(time.Hour).Truncate(time.Second)
	ptask, popts, err := queue.NewInvokeTask(queue.Payload{RequestId: "later-by-asynq", Function: "fn"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(f.rdb).EnqueueContext(ctx, ptask, append(popts, asynq.ProcessAt(due))...); err != nil {
		t.Fatal(err)
	}
	for _, req := range []submit.Request{{RequestID: "later"}, {}} { // the script and the plain path
		req.Function, req.Event, req.At = "fn", []byte(`{}`), due
		res, err := f.sub.Submit(ctx, req)
		if err != nil || res.Record.Status != record.Scheduled {
			t.Fatalf("delayed: %+v %v", res, err)
		}
		byAsynq, _ := f.rdb.HGetAll(ctx, keyspace.AsynqTask(queue.Name, "later-by-asynq")).Result()
		ours, _ := f.rdb.HGetAll(ctx, keyspace.AsynqTask(queue.Name, res.Record.RequestId)).Result()
		if fields(ours) != fields(byAsynq) || ours["state"] != byAsynq["state"] {
			t.Fatalf("scheduled task %v, asynq writes %v", ours, byAsynq)
		}
		info, err := f.insp.GetTaskInfo(queue.Name, res.Record.RequestId)
		// Handed over 3 s early: the worker starts it at its time.
		if err != nil || info.State != asynq.TaskStateScheduled || !info.NextProcessAt.Equal(due.Add(-3*time.Second)) {
			t.Fatalf("asynq reads %+v %v", info, err)
		}
		if err := f.insp.DeleteTask(queue.Name, res.Record.RequestId); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.insp.DeleteTask(queue.Name, "later-by-asynq"); err != nil {
		t.Fatal(err)
	}

	// asynq's server runs all three.
	ran := make(chan string, 3)
	srv := asynq.NewServerFromRedisClient(f.rdb, asynq.Config{Concurrency: 2, Queues: map[string]int{queue.Name: 1},
		TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		p, err := queue.Decode(id, t)
		ran <- p.RequestId
		return err
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	got := map[string]bool{}
	for len(got) < 3 {
		select {
		case id := <-ran:
			got[id] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("asynq's server ran %v", got)
		}
	}
	testenv.Eventually(t, 20*time.Second, "the task completed", func() bool {
		info, err := f.insp.GetTaskInfo(queue.Name, "by-jobgate")
		return err == nil && info.State == asynq.TaskStateCompleted
	})
}

func fields(m map[string]string) string {
	var k []string
	for f := range m {
		k = append(k, f)
	}
	sort.Strings(k)
	return fmt.Sprint(k)
}
