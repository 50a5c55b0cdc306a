package schemas

import (
	"encoding/json"
	"fmt"
)

// Event schema file names.
const (
	TimerEvent       = "timer-event.schema.json"
	APIGWEvent       = "apigw-event.schema.json"
	CkafkaEvent      = "ckafka-event.schema.json"
	NatsEvent        = "nats-event.schema.json"
	AmqpEvent        = "amqp-event.schema.json"
	RedisStreamEvent = "redis-stream-event.schema.json"
	// EventFileStub is SCF_CUSTOM_CONTAINER_EVENT when the event is in a
	// file (large_events: file).
	EventFileStub = "event-file-stub.schema.json"
	// CloudEventAttributes is an event's "ce" member (a CloudEvent's
	// attributes).
	CloudEventAttributes = "cloudevent-attributes.schema.json"
	// DestinationResult is what a destination receives.
	DestinationResult = "destination-result.schema.json"
)

// RecordsSchema returns the schema of a {"Records":[{kind:…}]} event.
func RecordsSchema(kind string) string {
	return map[string]string{"Ckafka": CkafkaEvent, "Nats": NatsEvent, "Amqp": AmqpEvent, "RedisStream": RedisStreamEvent}[kind]
}

// Timer is SCF's timer trigger event. All fields are strings; Time is the
// scheduled fire instant in UTC, RFC 3339, second precision.
type Timer struct {
	Type        string `json:"Type"`
	TriggerName string `json:"TriggerName"`
	Time        string `json:"Time"`
	Message     string `json:"Message"`
}

// APIGateway is SCF's API Gateway trigger event, which jobgate's HTTP
// triggers produce.
type APIGateway struct {
	RequestContext        APIGatewayContext     `json:"requestContext"`
	Headers               map[string]string     `json:"headers"`
	HeadersEncoding       map[string]string     `json:"headersEncoding,omitempty"` // jobgate's: "base64" for a value that is not UTF-8
	Body                  *string               `json:"body,omitempty"`
	IsBase64Encoded       bool                  `json:"isBase64Encoded,omitempty"`
	PathParameters        map[string]string     `json:"pathParameters"`
	QueryStringParameters map[string]string     `json:"queryStringParameters"`
	HeaderParameters      map[string]string     `json:"headerParameters"`
	StageVariables        map[string]string     `json:"stageVariables,omitempty"`
	Path                  string                `json:"path"`
	HTTPMethod            string                `json:"httpMethod"`
	QueryString           map[string]QueryValue `json:"queryString"`
	// CE holds a CloudEvent's attributes when the request was one
	// (jobgate's; cloudevent-attributes.schema.json).
	CE map[string]any `json:"ce,omitempty"`
}

// APIGatewayContext is the event's requestContext.
type APIGatewayContext struct {
	ServiceID  string            `json:"serviceId"`
	Path       string            `json:"path"`       // the configured path template
	HTTPMethod string            `json:"httpMethod"` // the configured method, ANY for several
	RequestID  string            `json:"requestId,omitempty"`
	Identity   map[string]string `json:"identity"`
	SourceIP   string            `json:"sourceIp"`
	Stage      string            `json:"stage"`
}

// QueryValue is one queryString value in SCF's three forms: a string; an
// array of strings for a repeated key; true for a key with no value.
type QueryValue struct {
	Values []string
	Flag   bool // a key without a value
}

// MarshalJSON writes the SCF form.
func (q QueryValue) MarshalJSON() ([]byte, error) {
	switch {
	case q.Flag:
		return []byte("true"), nil
	case len(q.Values) == 1:
		return json.Marshal(q.Values[0])
	default:
		return json.Marshal(q.Values)
	}
}

// UnmarshalJSON reads any of the three forms.
func (q *QueryValue) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*q = QueryValue{Values: []string{s}}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err == nil {
		*q = QueryValue{Values: ss}
		return nil
	}
	var f bool
	if err := json.Unmarshal(b, &f); err == nil && f {
		*q = QueryValue{Flag: true}
		return nil
	}
	return fmt.Errorf("queryString value %s: want a string, an array of strings or true", b)
}
