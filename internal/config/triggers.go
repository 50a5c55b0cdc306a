package config

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Trigger types.
const (
	TriggerTimer = "timer"
	TriggerHTTP  = "http"
)

// TimerTrigger is a timer trigger's options.
type TimerTrigger struct {
	Cron     string `json:"cron"`
	Message  string `json:"message"`
	Timezone string `json:"timezone"` // default: the config's timezone
	// Catchup says what to do with instants missed while no gateway ran
	// (or Redis was down): last (default: the latest once), none, or all within
	// CatchupWindowS. The window also bounds how long a fire that could
	// not be enqueued keeps being retried.
	Catchup        string `json:"catchup"`
	CatchupWindowS int    `json:"catchup_window_s"`
	Enabled        *bool  `json:"enabled"`
}

// HTTPTrigger is an HTTP (webhook) trigger's options.
type HTTPTrigger struct {
	Path      string    `json:"path"`    // with {name} segments
	Methods   []string  `json:"methods"` // default POST; ANY for all
	ServiceID string    `json:"service_id"`
	Stage     string    `json:"stage"`
	Auth      *HTTPAuth `json:"auth"`
	// ForwardHeaders, when set, is the allow-list of request headers the
	// event carries; DropHeaders removes more. Credentials (Authorization,
	// Proxy-Authorization, Cookie) and the trigger's own signature header
	// never enter an event.
	ForwardHeaders []string `json:"forward_headers"`
	DropHeaders    []string `json:"drop_headers"`
	// DedupeHeader names the request header whose value is the caller's
	// idempotency key (e.g. X-GitHub-Delivery), scoped to this trigger; a
	// key reused with a different request is refused (409). Unset: every
	// request is a new invocation.
	DedupeHeader string `json:"dedupe_header"`
}

// HTTPAuth: none (nil), a bearer token, or an HMAC-SHA256 signature.
type HTTPAuth struct {
	Bearer     *BearerAuth `json:"bearer"`
	HMACSHA256 *HMACAuth   `json:"hmac_sha256"`
}

// BearerAuth checks "Authorization: Bearer <token>".
type BearerAuth struct {
	TokenEnv string `json:"token_env"`
}

// Signature schemes of HMACAuth (docs/SECURITY.md).
const (
	// SchemeJobgate signs method, path, query, body and a timestamp:
	// X-Jobgate-Signature: v1=<hex> over "v1\n<ts>\n<METHOD>\n<path>\n<query>\n<body>",
	// X-Jobgate-Timestamp: <unix seconds>.
	SchemeJobgate = "jobgate"
	// SchemeGitHub is GitHub's X-Hub-Signature-256: sha256=<hex> of the
	// body (no timestamp: pair it with dedupe_header: X-GitHub-Delivery).
	SchemeGitHub = "github"
	// SchemeStripe is Stripe's Stripe-Signature: t=<ts>,v1=<hex> over
	// "<ts>.<body>".
	SchemeStripe = "stripe"
	// SchemeStandard is Standard Webhooks (standardwebhooks.com, Svix's):
	// webhook-signature: "v1,<base64>" (several, space-separated) over
	// "<webhook-id>.<webhook-timestamp>.<body>", the secret "whsec_<base64>".
	// Its webhook-id is signed, so it is the dedupe key.
	SchemeStandard = "standard"
)

// HMACAuth checks an HMAC-SHA256 signature by one of the schemes.
type HMACAuth struct {
	SecretEnv string `json:"secret_env"`
	Scheme    string `json:"scheme"` // jobgate (default), github, stripe, standard
	// Header overrides the scheme's signature header; TimestampHeader the
	// jobgate scheme's timestamp header.
	Header          string `json:"header"`
	TimestampHeader string `json:"timestamp_header"`
	ToleranceS      int    `json:"tolerance_s"` // replay window, default 300
}

// decodeOptions decodes a trigger's options strictly into v.
func (t Trigger) decodeOptions(v any) error {
	b, err := json.Marshal(t.Options)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("trigger %s: %w", t.Name, err)
	}
	return nil
}

// Timer is a timer trigger's options, as Parse decoded them (defaults
// applied); the zero value for another type.
func (t Trigger) Timer() TimerTrigger { return deref(t.timer) }

// HTTP is an HTTP trigger's options, as Parse decoded them.
func (t Trigger) HTTP() HTTPTrigger { return deref(t.http) }

// Queue is a message-queue trigger's options, as Parse decoded them.
func (t Trigger) Queue() QueueTrigger { return deref(t.queue) }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// decodeTriggers decodes every trigger's options, once, into its typed
// form with that type's defaults.
func (c *Config) decodeTriggers() []Problem {
	var probs []Problem
	for i := range c.Functions {
		for j := range c.Functions[i].Triggers {
			t := &c.Functions[i].Triggers[j]
			if err := t.decode(); err != nil {
				probs = append(probs, Problem{Path: fmt.Sprintf("functions[%d].triggers[%d]", i, j), Message: err.Error()})
			}
		}
	}
	return probs
}

func (t *Trigger) decode() error {
	switch t.Type {
	case TriggerTimer:
		o := TimerTrigger{Catchup: "last", CatchupWindowS: 300}
		if err := t.decodeOptions(&o); err != nil {
			return err
		}
		t.timer = &o
	case TriggerHTTP:
		o := HTTPTrigger{ServiceID: "jobgate", Stage: "release"}
		if err := t.decodeOptions(&o); err != nil {
			return err
		}
		if len(o.Methods) == 0 {
			o.Methods = []string{"POST"}
		}
		if h := authHMAC(o.Auth); h != nil {
			if h.Scheme == "" {
				h.Scheme = SchemeJobgate
			}
			if h.Header == "" {
				h.Header = map[string]string{SchemeJobgate: "X-Jobgate-Signature", SchemeGitHub: "X-Hub-Signature-256", SchemeStripe: "Stripe-Signature",
					SchemeStandard: "Webhook-Signature"}[h.Scheme]
			}
			if h.TimestampHeader == "" {
				h.TimestampHeader = map[string]string{SchemeJobgate: "X-Jobgate-Timestamp", SchemeStandard: "Webhook-Timestamp"}[h.Scheme]
			}
			if h.Scheme == SchemeStandard && o.DedupeHeader == "" {
				o.DedupeHeader = "Webhook-Id"
			}
			if h.ToleranceS == 0 {
				h.ToleranceS = 300
			}
		}
		t.http = &o
	case TriggerKafka, TriggerNATS, TriggerAMQP, TriggerRedisStream:
		batch := 1
		if t.Type == TriggerKafka {
			batch = 10
		}
		o := QueueTrigger{Batch: Batch{Max: batch, WaitMs: 1000}, Start: "latest", MaxPending: 10000, AckWaitS: 60}
		if err := t.decodeOptions(&o); err != nil {
			return err
		}
		if o.Prefetch == 0 {
			o.Prefetch = 2 * o.Batch.Max
		}
		t.queue = &o
	default:
		return fmt.Errorf("unknown trigger type %s", t.Type)
	}
	return nil
}

func authHMAC(a *HTTPAuth) *HMACAuth {
	if a == nil {
		return nil
	}
	return a.HMACSHA256
}

// Message-queue trigger types.
const (
	TriggerKafka       = "kafka"
	TriggerNATS        = "nats"
	TriggerAMQP        = "amqp"
	TriggerRedisStream = "redis_stream"
)

// Batch bounds how many messages form one event.
type Batch struct {
	Max    int `json:"max"`
	WaitMs int `json:"wait_ms"`
}

// QueueTrigger holds the options of the message-queue triggers; the
// schema says which keys each type takes.
type QueueTrigger struct {
	Batch Batch `json:"batch"`
	// Start is where a new consumer group/durable begins: latest
	// (default, as SCF) or earliest.
	Start string `json:"start"`
	// MaxPending pauses fetching while jobgate's queue holds more
	// pending tasks than this (back-pressure); default 10000.
	MaxPending int `json:"max_pending"`

	// kafka
	Brokers []string   `json:"brokers"`
	Topic   string     `json:"topic"`
	Group   string     `json:"group"`
	SASL    *KafkaSASL `json:"sasl"`
	TLS     *TLS       `json:"tls"`
	// nats
	URL         string `json:"url"`
	Stream      string `json:"stream"`
	Subject     string `json:"subject"`
	Durable     string `json:"durable"`
	Credentials string `json:"credentials"`
	AckWaitS    int    `json:"ack_wait_s"`
	// amqp (URL above, or URLEnv)
	URLEnv   string `json:"url_env"`
	Queue    string `json:"queue"`
	Prefetch int    `json:"prefetch"`
	// redis_stream (Stream, Group above)
	Addr        string `json:"addr"`
	PasswordEnv string `json:"password_env"`
	Consumer    string `json:"consumer"`
}

// KafkaSASL authenticates to Kafka.
type KafkaSASL struct {
	Mechanism   string `json:"mechanism" yaml:"mechanism"`
	Username    string `json:"username" yaml:"username"`
	PasswordEnv string `json:"password_env" yaml:"password_env"`
}

// TLS for a broker connection.
type TLS struct {
	Enabled            bool   `json:"enabled" yaml:"enabled"`
	CAFile             string `json:"ca_file" yaml:"ca_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify" yaml:"insecure_skip_verify"`
}
