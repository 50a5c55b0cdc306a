package gateway

import (
	"net/http"
	"sort"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/scfcron"
	"github.com/jobgate/jobgate/triggers"
)

// FunctionView is a function as GET /v1/functions shows it: what runs and
// how it is triggered, never a secret (env values, passwords, URLs'
// credentials).
type FunctionView struct {
	Name           string
	Namespace      string
	Image          string
	Command        []string `json:",omitempty"`
	Args           []string `json:",omitempty"`
	EnvKeys        []string `json:",omitempty"` // names only: values may be secrets
	MemoryMB       int
	TimeoutS       int
	CPU            float64 `json:",omitempty"`
	User           string  `json:",omitempty"`
	ReadonlyRootfs bool    `json:",omitempty"`
	Network        string
	Concurrency    int
	Retry          RetryView
	MaxEventAgeS   int
	Acceleration   bool
	Provisioned    int
	Triggers       []TriggerView
}

// RetryView is a function's retry policy.
type RetryView struct{ Max, DelayS int }

// TriggerView is one trigger: its kind and where it listens, not its
// credentials.
type TriggerView struct {
	Type, Name string
	// timer
	Cron     string `json:",omitempty"`
	Disabled bool   `json:",omitempty"` // enabled: false
	NextFire string `json:",omitempty"` // RFC 3339, UTC; none when disabled
	// http
	Path    string   `json:",omitempty"`
	Methods []string `json:",omitempty"`
	Auth    string   `json:",omitempty"` // none, bearer, hmac_sha256/<scheme>
	// queues
	Source string `json:",omitempty"` // brokers/url without credentials, topic/stream/queue
}

func (g *Gateway) listFunctions(_ http.ResponseWriter, _ *http.Request) (any, error) {
	out := []FunctionView{}
	for _, fn := range g.config().Functions {
		out = append(out, g.functionView(fn))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return map[string]any{"Functions": out}, nil
}

func (g *Gateway) getFunction(_ http.ResponseWriter, r *http.Request) (any, error) {
	fn := g.config().Function(r.PathValue("name"))
	if fn == nil {
		return nil, notFound(codeFunctionNotFound, "function %q is not configured", r.PathValue("name"))
	}
	return g.functionView(*fn), nil
}

func (g *Gateway) functionView(fn config.Function) FunctionView {
	v := FunctionView{Name: fn.Name, Namespace: fn.Namespace, Image: fn.Image, Command: fn.Command, Args: fn.Args,
		MemoryMB: fn.MemoryMB, TimeoutS: fn.TimeoutS, CPU: fn.CPU, User: fn.User, ReadonlyRootfs: fn.ReadonlyRootfs,
		Network: fn.Network, Concurrency: fn.Concurrency, Retry: RetryView{Max: fn.RetryMax(), DelayS: fn.Retry.DelayS},
		MaxEventAgeS: fn.MaxEventAgeS, Acceleration: fn.Acceleration, Provisioned: fn.Provisioned, Triggers: []TriggerView{}}
	for k := range fn.Env {
		v.EnvKeys = append(v.EnvKeys, k)
	}
	sort.Strings(v.EnvKeys)
	for _, tr := range fn.Triggers {
		tv := TriggerView{Type: tr.Type, Name: tr.Name}
		switch tr.Type {
		case config.TriggerTimer:
			tm := tr.Timer()
			tv.Cron = tm.Cron
			if tm.Enabled != nil && !*tm.Enabled {
				tv.Disabled = true
				break
			}
			zone := tm.Timezone
			if zone == "" {
				zone = g.config().Timezone
			}
			if loc, err := time.LoadLocation(zone); err == nil {
				if s, err := scfcron.Parse(tm.Cron, loc); err == nil {
					if next := s.Next(g.now()); !next.IsZero() {
						tv.NextFire = next.UTC().Format(time.RFC3339)
					}
				}
			}
		case config.TriggerHTTP:
			h := tr.HTTP()
			tv.Path, tv.Methods, tv.Auth = h.Path, h.Methods, "none"
			switch {
			case h.Auth != nil && h.Auth.Bearer != nil:
				tv.Auth = "bearer"
			case h.Auth != nil && h.Auth.HMACSHA256 != nil:
				tv.Auth = "hmac_sha256/" + h.Auth.HMACSHA256.Scheme
			}
		default:
			q := tr.Queue()
			where := q.Topic + q.Stream + q.Queue
			switch {
			case len(q.Brokers) > 0:
				tv.Source = triggers.RedactURL(q.Brokers[0]) + "/" + where
			case q.URL != "":
				tv.Source = triggers.RedactURL(q.URL) + " " + where
			default:
				tv.Source = where
			}
		}
		v.Triggers = append(v.Triggers, tv)
	}
	return v
}
