// Package queue defines jobgate's asynq task: one task per invocation, its
// ID the RequestId, its payload only a reference (the event itself lives
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

// TypeInvoke is the task type of an invocation.
const TypeInvoke = "jobgate:invoke"

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
	return asynq.NewTask(TypeInvoke, b), opts, nil
}

// DecodePayload reads a task body.
func DecodePayload(t *asynq.Task) (Payload, error) {
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
