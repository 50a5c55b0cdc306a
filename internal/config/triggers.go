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
	// (or Redis was down): none (default), last, or all within
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

// HMACAuth checks an HMAC-SHA256 of the raw body (GitHub's
// X-Hub-Signature-256: sha256=<hex> by default). With TimestampHeader the
// MAC covers "<timestamp>.<body>" and the timestamp must be within
// ToleranceS of now (replay window).
type HMACAuth struct {
	Header          string `json:"header"`
	SecretEnv       string `json:"secret_env"`
	Prefix          string `json:"prefix"`
	TimestampHeader string `json:"timestamp_header"`
	ToleranceS      int    `json:"tolerance_s"`
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

// Timer returns the timer options with defaults applied.
func (t Trigger) Timer() (TimerTrigger, error) {
	var o TimerTrigger
	if err := t.decodeOptions(&o); err != nil {
		return o, err
	}
	if o.Catchup == "" {
		o.Catchup = "none"
	}
	if o.CatchupWindowS == 0 {
		o.CatchupWindowS = 300
	}
	return o, nil
}

// HTTP returns the HTTP trigger options with defaults applied.
func (t Trigger) HTTP() (HTTPTrigger, error) {
	var o HTTPTrigger
	if err := t.decodeOptions(&o); err != nil {
		return o, err
	}
	if len(o.Methods) == 0 {
		o.Methods = []string{"POST"}
	}
	if o.ServiceID == "" {
		o.ServiceID = "jobgate"
	}
	if o.Stage == "" {
		o.Stage = "release"
	}
	if a := o.Auth; a != nil && a.HMACSHA256 != nil {
		if a.HMACSHA256.Header == "" {
			a.HMACSHA256.Header = "X-Hub-Signature-256"
			if a.HMACSHA256.Prefix == "" {
				a.HMACSHA256.Prefix = "sha256="
			}
		}
		if a.HMACSHA256.ToleranceS == 0 {
			a.HMACSHA256.ToleranceS = 300
		}
	}
	return o, nil
}
