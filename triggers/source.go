// Package triggers holds jobgate's event sources. Each adapter (timer/,
// httptrigger/, and the message-queue adapters to come) normalizes what it
// receives into SCF's event structure and hands it to a Sink — the same
// path the invoke API uses — which records and durably enqueues it.
package triggers

import (
	"context"

	"github.com/jobgate/jobgate/internal/submit"
)

// Sink takes normalized events. *submit.Submitter is the one
// implementation; a source acknowledges to its sender (or broker) only
// after Submit returned without error.
type Sink interface {
	Submit(ctx context.Context, req submit.Request) (submit.Result, error)
	// EventRoom is the largest event that fits the function's limits.
	EventRoom(function string) int
	// Known reports whether an invocation with this RequestId exists.
	Known(ctx context.Context, requestID string) (bool, error)
}

var _ Sink = (*submit.Submitter)(nil)
