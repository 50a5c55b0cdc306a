package queue

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// TypeDestination is the task that delivers an invocation's final status
// to one of its function's destinations (on_success, on_failure).
const TypeDestination = "jobgate:destination"

// Destination names one delivery: the invocation, the attempt that
// ended it, which list (success or failure) and the target's index in it.
type Destination struct {
	RequestId string `json:"RequestId"`
	Function  string `json:"Function"`
	Attempt   int    `json:"Attempt"`
	Success   bool   `json:"Success"`
	Index     int    `json:"Index"`
}

// ID is the delivery's task ID: queued twice (a worker that crashed after
// queueing it ends the attempt again), it is still one task.
func (d Destination) ID() string {
	kind := "failure"
	if d.Success {
		kind = "success"
	}
	return fmt.Sprintf("%s~%d~%s~%d", d.RequestId, d.Attempt, kind, d.Index)
}

// NewDestinationTask builds the delivery's task: retried `retries` times
// (the worker's retry delay doubles from 1 s), its ID kept for retention.
func NewDestinationTask(d Destination, retries int, retention time.Duration) (*asynq.Task, []asynq.Option, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, nil, fmt.Errorf("encode destination task %s: %w", d.ID(), err)
	}
	return asynq.NewTask(TypeDestination, b), []asynq.Option{
		asynq.TaskID(d.ID()), asynq.Queue(Name), asynq.MaxRetry(retries),
		asynq.Timeout(time.Minute), asynq.Retention(retention),
	}, nil
}

// DecodeDestination reads a delivery task's body.
func DecodeDestination(t *asynq.Task) (Destination, error) {
	var d Destination
	if err := json.Unmarshal(t.Payload(), &d); err != nil || d.RequestId == "" || d.Function == "" {
		return d, fmt.Errorf("decode destination task: %v", err)
	}
	return d, nil
}

// ParseDestinationID reads a delivery back from its ID (a dead letter's
// key) and the function it belongs to.
func ParseDestinationID(id, function string) (Destination, error) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 || (parts[2] != "success" && parts[2] != "failure") {
		return Destination{}, fmt.Errorf("%q is not a delivery id (<RequestId>~<attempt>~success|failure~<index>)", id)
	}
	attempt, err1 := strconv.Atoi(parts[1])
	index, err2 := strconv.Atoi(parts[3])
	if err1 != nil || err2 != nil || function == "" {
		return Destination{}, fmt.Errorf("%q is not a delivery id", id)
	}
	d := Destination{RequestId: parts[0], Function: function, Attempt: attempt, Success: parts[2] == "success", Index: index}
	if d.ID() != id {
		return Destination{}, fmt.Errorf("%q is not a delivery id", id)
	}
	return d, nil
}
