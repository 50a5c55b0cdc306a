// Package cloudevent reads a CloudEvents 1.0 HTTP request — binary mode
// (ce-* headers, the body is the data) or structured mode (a body of
// Content-Type application/cloudevents+json) — with the CloudEvents SDK,
// and gives what a job sees of it: its attributes as the event's "ce"
// object (schemas/cloudevent-attributes.schema.json).
package cloudevent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Event is a CloudEvent as received.
type Event struct {
	// ID and Source identify it: together they are its dedupe key.
	ID, Source string
	// Attributes are every context attribute set, extensions included,
	// by their CloudEvents names (extension values in their canonical
	// string form).
	Attributes map[string]any
	// Data is the event's data as sent (decoded, for data_base64).
	Data []byte
}

// ErrInvalid wraps why a request that is a CloudEvent is not a valid one.
var ErrInvalid = errors.New("invalid CloudEvent")

// Parse returns the CloudEvent a request carries (header and body), or
// nil if it is not one.
func Parse(ctx context.Context, header http.Header, body []byte) (*Event, error) {
	// Most requests are not CloudEvents: two header looks decide it.
	if header.Get("Ce-Specversion") == "" && !strings.HasPrefix(strings.ToLower(header.Get("Content-Type")), "application/cloudevents") {
		return nil, nil
	}
	msg := cehttp.NewMessage(header, io.NopCloser(bytes.NewReader(body)))
	switch msg.ReadEncoding() {
	case binding.EncodingUnknown:
		return nil, nil
	case binding.EncodingBatch:
		return nil, fmt.Errorf("%w: a batch (application/cloudevents-batch+json) is not taken; send one event per request", ErrInvalid)
	}
	ev, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	attrs := map[string]any{"specversion": ev.SpecVersion(), "id": ev.ID(), "source": ev.Source(), "type": ev.Type()}
	for name, v := range map[string]string{"subject": ev.Subject(), "datacontenttype": ev.DataContentType(), "dataschema": ev.DataSchema()} {
		if v != "" {
			attrs[name] = v
		}
	}
	if t := ev.Time(); !t.IsZero() {
		attrs["time"] = t.UTC().Format(time.RFC3339Nano)
	}
	for name, v := range ev.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			return nil, fmt.Errorf("%w: extension %s: %w", ErrInvalid, name, err)
		}
		attrs[name] = s
	}
	return &Event{ID: ev.ID(), Source: ev.Source(), Attributes: attrs, Data: ev.Data()}, nil
}

// IsJSON says the data is JSON: its datacontenttype is JSON, or unset
// (CloudEvents' JSON format defaults it to application/json).
func (e *Event) IsJSON() bool {
	ct, _ := e.Attributes["datacontenttype"].(string)
	ct, _, _ = strings.Cut(ct, ";")
	ct = strings.TrimSpace(strings.ToLower(ct))
	return ct == "" || ct == "application/json" || ct == "text/json" || strings.HasSuffix(ct, "+json")
}

// ObjectEvent is the SCF event of a CloudEvent whose data is a JSON
// object: that object, byte for byte, with the attributes as its first
// member "ce". The object may not have a "ce" member of its own.
func (e *Event) ObjectEvent() ([]byte, error) {
	data := bytes.TrimSpace(e.Data)
	var members map[string]json.RawMessage
	if !e.IsJSON() || len(data) == 0 || data[0] != '{' || json.Unmarshal(data, &members) != nil {
		return nil, fmt.Errorf("%w: its data must be a JSON object (the event a job receives)", ErrInvalid)
	}
	if _, taken := members["ce"]; taken {
		return nil, fmt.Errorf(`%w: its data has a member "ce", where the attributes go`, ErrInvalid)
	}
	ce, err := json.Marshal(e.Attributes)
	if err != nil {
		return nil, fmt.Errorf("encode CloudEvent attributes: %w", err)
	}
	out := make([]byte, 0, len(data)+len(ce)+8)
	out = append(append(append(out, `{"ce":`...), ce...), ',')
	rest := bytes.TrimSpace(data[1:])
	if len(rest) > 0 && rest[0] == '}' {
		out = out[:len(out)-1] // an empty object: no comma
	}
	return append(out, data[1:]...), nil
}
