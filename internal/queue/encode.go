package queue

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jobgate/jobgate/internal/record"
)

// Encoded is an invocation task in asynq's stored form: the submit path
// writes a first attempt's task in the same Redis script as its record
// (keyspace.Submit), so the two land together in one round trip. asynq
// keeps this form private (internal/base.EncodeMessage of its
// TaskMessage protobuf); TestEncodedTasksAreAsynqs pins it against
// asynq's Inspector and server so an upgrade that changes it fails.
type Encoded struct {
	ID      string // asynq's task id
	Message []byte // the TaskMessage protobuf
}

// TaskMessage field numbers (asynq internal/proto/asynq.proto).
const (
	fieldType      = 1
	fieldPayload   = 2
	fieldID        = 3
	fieldQueue     = 4
	fieldRetry     = 5
	fieldTimeout   = 8
	fieldRetention = 12
)

// Encode builds the task NewInvokeTask would enqueue (no delay) in
// asynq's stored form.
func Encode(p Payload, o Options) (Encoded, error) {
	if p.Attempt == 0 {
		p.Attempt = 1
	}
	if o.Delay > 0 {
		return Encoded{}, fmt.Errorf("encode task %s: a delayed task goes through asynq's client", p.RequestId)
	}
	// A first attempt's task has no payload (TypeFirst); proto3 leaves
	// empty bytes out, as asynq's encoder does.
	typ, payload := TypeFirst, []byte(nil)
	if p.Attempt > 1 {
		typ = TypeInvoke
		var err error
		if payload, err = json.Marshal(p); err != nil {
			return Encoded{}, fmt.Errorf("encode task %s: %w", p.RequestId, err)
		}
	}
	id := record.InstanceID(p.RequestId, p.Attempt)
	b := make([]byte, 0, 64+len(payload)+len(id))
	b = protowire.AppendTag(b, fieldType, protowire.BytesType)
	b = protowire.AppendString(b, typ)
	if len(payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, payload)
	}
	b = protowire.AppendTag(b, fieldID, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, fieldQueue, protowire.BytesType)
	b = protowire.AppendString(b, Name)
	// proto3 leaves zero values out, as asynq's encoder does.
	for _, f := range []struct {
		num protowire.Number
		v   int64
	}{{fieldRetry, int64(o.MaxRetry)}, {fieldTimeout, int64(o.Timeout.Seconds())}, {fieldRetention, int64(o.Retention.Seconds())}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(f.v))
		}
	}
	return Encoded{ID: id, Message: b}, nil
}
