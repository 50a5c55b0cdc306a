// Package queue defines jobgate's asynq task: one task per invocation, its
// ID the RequestId, its payload only a reference, none for a first
// attempt (TypeFirst) (the event itself lives
// beside the record, so large events never sit in asynq's retry or archive
// sets).
package queue

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/record"
)

// TypeInvoke is the task type of an invocation's later attempts (its
// payload: Payload, JSON).
const TypeInvoke = "jobgate:invoke"

// TypeFirst is the task type of an invocation's first attempt. It has no
// payload: its ID is the RequestId and the function is in the record. So
// its stored message stays within 64 bytes, and Redis keeps asynq's task
// hash in its compact listpack encoding (hash-max-listpack-value): about
// 300 bytes less per queued event than a hash table, and a cheaper write.
// (asynq's ServeMux matches types by prefix: no other type begins "jg".)
const TypeFirst = "jg"

// Name is the asynq queue every invocation goes through (named in
// keyspace, whose Cluster layout shares its slot).
const Name = keyspace.Queue

// Payload is the task body.
type Payload struct {
	RequestId string `json:"RequestId"`
	Function  string `json:"Function"`
	Attempt   int    `json:"Attempt"`
}

// Options are set explicitly on every task: asynq's defaults (25 retries,
// 30 min timeout, no retention) fit nothing here.
type Options struct {
	// MaxRetry bounds re-deliveries after scheduling errors.
	MaxRetry int
	// Timeout covers dequeue → pull → create → start, not the job's run.
	Timeout time.Duration
	// Retention keeps the finished task so its ID keeps deduping.
	Retention time.Duration
	// Delay postpones the task (retries of failed exits).
	Delay time.Duration
}

// NewInvokeTask builds the task and its enqueue options.
func NewInvokeTask(p Payload, o Options) (*asynq.Task, []asynq.Option, error) {
	if p.Attempt == 0 {
		p.Attempt = 1
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("encode task %s: %w", p.RequestId, err)
	}
	opts := []asynq.Option{
		asynq.TaskID(record.InstanceID(p.RequestId, p.Attempt)), // asynq keeps finished IDs
		asynq.Queue(Name),
		asynq.MaxRetry(o.MaxRetry),
		asynq.Timeout(o.Timeout),
		asynq.Retention(o.Retention),
	}
	if o.Delay > 0 {
		opts = append(opts, asynq.ProcessIn(o.Delay))
	}
	if p.Attempt == 1 {
		return asynq.NewTask(TypeFirst, nil), opts, nil
	}
	return asynq.NewTask(TypeInvoke, b), opts, nil
}

// IsInvoke says a task type is an invocation's.
func IsInvoke(taskType string) bool { return taskType == TypeFirst || taskType == TypeInvoke }

// Decode reads the invocation task t whose asynq ID is id. A first
// attempt's (TypeFirst) names no function: Function is empty, the
// record has it.
func Decode(id string, t *asynq.Task) (Payload, error) {
	if t.Type() == TypeFirst {
		if id == "" {
			return Payload{}, fmt.Errorf("decode task: a %s task without an ID", TypeFirst)
		}
		return Payload{RequestId: id, Attempt: 1}, nil
	}
	var p Payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("decode task payload: %w", err)
	}
	if p.Attempt == 0 {
		p.Attempt = 1
	}
	if p.RequestId == "" || p.Function == "" {
		return p, fmt.Errorf("decode task payload: missing RequestId or Function")
	}
	return p, nil
}
