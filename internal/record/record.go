// Package record stores invocation records in Redis: one hash per
// invocation, a time-ordered index for listing, and a change channel that
// lets callers wait for a status.
package record

import (
	"encoding/json"
	"strconv"
	"time"
)

// Status is an invocation's lifecycle state (docs/OPERATIONS.md, "Statuses, retries and dead letters").
type Status string

// Statuses, in lifecycle order. The last four are SCF's names; SCHEDULED
// (a delayed invocation waiting for its time) is jobgate's, before PENDING.
const (
	Scheduled  Status = "SCHEDULED"
	Pending    Status = "PENDING"
	Scheduling Status = "SCHEDULING"
	Running    Status = "RUNNING"
	Finished   Status = "FINISHED"
	Failed     Status = "FAILED"
	Aborted    Status = "ABORTED"
)

// Terminal reports whether no further transition is possible.
func (s Status) Terminal() bool { return s == Finished || s == Failed || s == Aborted }

// Started reports whether the instance has been started (or has ended).
func (s Status) Started() bool { return s == Running || s.Terminal() }

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case Scheduled, Pending, Scheduling, Running, Finished, Failed, Aborted:
		return true
	}
	return false
}

// Record is what GET /v1/invocations/{id} returns.
type Record struct {
	RequestId     string
	FunctionName  string
	Namespace     string
	Qualifier     string
	RequestSource string
	TriggerName   string
	Status        Status
	StatusCode    int
	ExitCode      *int
	Message       string
	Attempt       int
	Node          string
	ImageDigest   string
	EnqueueTime   string
	StartTime     string
	EndTime       string
	DurationMs    int64
	MemUsageBytes int64
	// Attempts are the earlier attempts of a retried invocation, oldest
	// first; the current one is the record itself.
	Attempts []AttemptSummary `json:",omitempty"`
	// ScheduledTime is when a delayed invocation is due (invoke?delay_s,
	// ?at); empty for the others.
	ScheduledTime string `json:",omitempty"`
	// Destinations are the deliveries of its final status (on_success,
	// on_failure), in the config's order.
	Destinations []DestinationStatus `json:",omitempty"`
	// Fingerprint is the hash of the request behind a caller's
	// idempotency key (submit.Fingerprint); not shown.
	Fingerprint string `json:"-"`
}

// DestinationStatus is one delivery of a final status.
type DestinationStatus struct {
	Target   string
	Status   string // QUEUED, DELIVERED or FAILED (dead-lettered)
	Attempts int
	Error    string `json:",omitempty"`
}

// Delivery states.
const (
	DestinationQueued    = "QUEUED"
	DestinationDelivered = "DELIVERED"
	DestinationFailed    = "FAILED"
)

// destinationField is the hash field of a record's i-th delivery.
func destinationField(i int) string { return "Destination." + strconv.Itoa(i) }

// AttemptSummary is how one attempt ended.
type AttemptSummary struct {
	Attempt       int
	Status        Status
	StatusCode    int
	ExitCode      *int `json:",omitempty"`
	Message       string
	Node          string
	StartTime     string
	EndTime       string
	DurationMs    int64
	MemUsageBytes int64
}

// InstanceID is the container (and log) id of one attempt: the RequestId
// for the first, "<RequestId>-<n>" for retries, so a retry never collides
// with its predecessor's leftovers.
func InstanceID(requestID string, attempt int) string {
	if attempt <= 1 {
		return requestID
	}
	return requestID + "-" + strconv.Itoa(attempt)
}

// TimeFormat is used for every timestamp in records.
const TimeFormat = time.RFC3339Nano

// newFields are a new record's field/value pairs: those set, defaults
// left out (fromFields puts them back). A record is born PENDING with
// no run yet, so only these can be set.
func (r *Record) newFields() []any {
	f := make([]any, 0, 20)
	add := func(k, v string, keepEmpty bool) {
		if v != "" || keepEmpty {
			f = append(f, k, v)
		}
	}
	add("RequestId", r.RequestId, true)
	add("FunctionName", r.FunctionName, true)
	if r.Namespace != DefaultNamespace {
		add("Namespace", r.Namespace, false)
	}
	if r.Qualifier != DefaultQualifier {
		add("Qualifier", r.Qualifier, false)
	}
	add("RequestSource", r.RequestSource, false)
	add("TriggerName", r.TriggerName, false)
	add("Status", string(r.Status), true)
	add("Message", r.Message, false)
	add("Node", r.Node, false)
	add("ImageDigest", r.ImageDigest, false)
	add("EnqueueTime", r.EnqueueTime, true)
	add("StartTime", r.StartTime, false)
	add("EndTime", r.EndTime, false)
	add("Fingerprint", r.Fingerprint, false)
	add("ScheduledTime", r.ScheduledTime, false)
	f = append(f, "StatusCode", r.StatusCode, "Attempt", r.Attempt)
	if r.DurationMs != 0 {
		f = append(f, "DurationMs", r.DurationMs)
	}
	if r.MemUsageBytes != 0 {
		f = append(f, "MemUsageBytes", r.MemUsageBytes)
	}
	if r.ExitCode != nil {
		f = append(f, "ExitCode", *r.ExitCode)
	}
	return f
}

// Defaults a record leaves out of Redis (fromFields restores them).
const (
	DefaultQualifier = "$LATEST"
	DefaultNamespace = "default"
)

func fromFields(m map[string]string) *Record {
	atoi := func(k string) int { n, _ := strconv.Atoi(m[k]); return n }
	atoi64 := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	r := &Record{
		RequestId: m["RequestId"], FunctionName: m["FunctionName"], Namespace: m["Namespace"],
		Qualifier: m["Qualifier"], RequestSource: m["RequestSource"], TriggerName: m["TriggerName"],
		Status: Status(m["Status"]), StatusCode: atoi("StatusCode"), Message: m["Message"],
		Attempt: atoi("Attempt"), Node: m["Node"], ImageDigest: m["ImageDigest"],
		EnqueueTime: m["EnqueueTime"], StartTime: m["StartTime"], EndTime: m["EndTime"],
		DurationMs: atoi64("DurationMs"), MemUsageBytes: atoi64("MemUsageBytes"), Fingerprint: m["Fingerprint"],
		ScheduledTime: m["ScheduledTime"],
	}
	if r.Qualifier == "" {
		r.Qualifier = DefaultQualifier
	}
	if r.Namespace == "" {
		r.Namespace = DefaultNamespace
	}
	if v, ok := m["ExitCode"]; ok {
		n, _ := strconv.Atoi(v)
		r.ExitCode = &n
	}
	for i := 0; ; i++ {
		v, ok := m[destinationField(i)]
		if !ok {
			break
		}
		var d DestinationStatus
		_ = json.Unmarshal([]byte(v), &d)
		r.Destinations = append(r.Destinations, d)
	}
	return r
}

// Update is a partial change of a record; nil fields are left alone.
type Update struct {
	Status        Status
	StatusCode    *int
	ExitCode      *int
	Message       *string
	Attempt       *int
	Node          *string
	ImageDigest   *string
	StartTime     *time.Time
	EndTime       *time.Time
	DurationMs    *int64
	MemUsageBytes *int64
	// ClearRun forgets the previous attempt's run fields (start, end,
	// exit code, duration, memory) when a new attempt begins.
	ClearRun bool
	// AppendAttempt adds a finished attempt to the record's history.
	AppendAttempt *AttemptSummary
}

// runFields are cleared by Update.ClearRun.
var runFields = []string{"StartTime", "EndTime", "ExitCode", "DurationMs", "MemUsageBytes"}

func (u *Update) fields() []any {
	var f []any
	if u.Status != "" {
		f = append(f, "Status", string(u.Status))
	}
	if u.StatusCode != nil {
		f = append(f, "StatusCode", *u.StatusCode)
	}
	if u.ExitCode != nil {
		f = append(f, "ExitCode", *u.ExitCode)
	}
	if u.Message != nil {
		f = append(f, "Message", *u.Message)
	}
	if u.Attempt != nil {
		f = append(f, "Attempt", *u.Attempt)
	}
	if u.Node != nil {
		f = append(f, "Node", *u.Node)
	}
	if u.ImageDigest != nil {
		f = append(f, "ImageDigest", *u.ImageDigest)
	}
	if u.StartTime != nil {
		f = append(f, "StartTime", u.StartTime.UTC().Format(TimeFormat))
	}
	if u.EndTime != nil {
		f = append(f, "EndTime", u.EndTime.UTC().Format(TimeFormat))
	}
	if u.DurationMs != nil {
		f = append(f, "DurationMs", *u.DurationMs)
	}
	if u.MemUsageBytes != nil {
		f = append(f, "MemUsageBytes", *u.MemUsageBytes)
	}
	return f
}

// Ptr returns a pointer to v, for building Updates.
func Ptr[T any](v T) *T { return &v }

// Summary captures how the record's current attempt ended.
func (r *Record) Summary() *AttemptSummary {
	return &AttemptSummary{
		Attempt: r.Attempt, Status: r.Status, StatusCode: r.StatusCode, ExitCode: r.ExitCode, Message: r.Message,
		Node: r.Node, StartTime: r.StartTime, EndTime: r.EndTime, DurationMs: r.DurationMs, MemUsageBytes: r.MemUsageBytes,
	}
}
