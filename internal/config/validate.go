package config

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/scfcron"
)

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnvPrefixes are SCF's reserved prefixes plus jobgate's own.
var reservedEnvPrefixes = []string{"SCF_", "QCLOUD_", "TENCENTCLOUD_", "JOBGATE_"}

// validate checks what the schema cannot express. It reads only c: the
// environment is Resolve's.
func (c *Config) validate() []Problem {
	var probs []Problem
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if c.Redis.Addr != "" && c.Redis.URL != "" {
		add("redis", "set addr or url, not both")
	}
	if c.Redis.Sentinel != nil || c.Redis.Cluster != nil {
		if c.Redis.Addr != "" || c.Redis.URL != "" || (c.Redis.Sentinel != nil && c.Redis.Cluster != nil) {
			add("redis", "set one of addr/url, sentinel or cluster")
		}
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		add("timezone", "unknown time zone %q", c.Timezone)
	}
	if w := c.Worker.Warm; w.MaxMB < 0 || w.IdleS < 0 {
		add("worker.warm", "max_mb and idle_s must not be negative")
	}
	seen := map[string]int{}
	routes := newRouteSet()
	for i, f := range c.Functions {
		p := fmt.Sprintf("functions[%d]", i)
		if j, dup := seen[f.Name]; dup {
			add(p+".name", "function %q is already defined at functions[%d]", f.Name, j)
		}
		seen[f.Name] = i
		if _, err := reference.ParseNormalizedNamed(f.Image); err != nil {
			add(p+".image", "not an image reference %q: %v", f.Image, err)
		}
		for kind, ds := range map[string][]Destination{"on_success": f.OnSuccess, "on_failure": f.OnFailure} {
			for j, d := range ds {
				dp := fmt.Sprintf("%s.%s[%d]", p, kind, j)
				switch {
				case d.kinds() != 1:
					add(dp, "set one target: function, url, redis_stream, nats, amqp or kafka")
				case d.Function != "" && c.Function(d.Function) == nil:
					add(dp+".function", "no function %q", d.Function)
				case d.URL == "" && d.SecretEnv != "":
					add(dp+".secret_env", "signs a url; other targets need none")
				case d.URL != "":
					if u, err := url.Parse(d.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
						add(dp+".url", "not an http(s) URL: %q", d.URL)
					}
				case d.RedisStream != nil && (d.RedisStream.Stream == "" || strings.ContainsAny(d.RedisStream.Stream, "{}")):
					add(dp+".redis_stream.stream", "required, without braces (its delivery marks share its hash slot)")
				case d.NATS != nil && (d.NATS.URL == "" || d.NATS.Subject == ""):
					add(dp+".nats", "url and subject are required")
				case d.AMQP != nil && (d.AMQP.URL == "") == (d.AMQP.URLEnv == ""):
					add(dp+".amqp", "set url or url_env, one of them")
				case d.Kafka != nil && (len(d.Kafka.Brokers) == 0 || d.Kafka.Topic == ""):
					add(dp+".kafka", "brokers and topic are required")
				}
				if d.Format != "" && d.Format != "cloudevents" {
					add(dp+".format", "unknown format %q (cloudevents, or leave it out)", d.Format)
				}
			}
		}
		if c.Restricted(&c.Functions[i]) {
			if len(f.CapAdd) > 0 {
				add(p+".cap_add", "security: restricted drops every capability; cap_add does not apply (use security: default)")
			}
			if u, _, _ := strings.Cut(f.User, ":"); u == "0" {
				add(p+".user", "security: restricted runs as non-root; user 0 does not apply")
			}
		}
		if f.MaxEventMB != 0 && !f.EventsByFile() {
			add(p+".max_event_mb", "applies only with large_events: file (without it an event must fit SCF_CUSTOM_CONTAINER_EVENT)")
		}
		var envStrings []string
		for k, v := range f.Env {
			switch {
			case !envKey.MatchString(k):
				add(p+".env."+k, "not a valid environment variable name")
			case jobenv.IsBuiltin(k) || hasReservedPrefix(k):
				add(p+".env."+k, "reserved: names starting with %s and SCF's built-in variables are set by jobgate", strings.Join(reservedEnvPrefixes, ", "))
			}
			envStrings = append(envStrings, k+"="+v)
		}
		if err := jobenv.CheckEnv(envStrings); err != nil {
			add(p+".env", "%v", err)
		}
		for j, a := range append(append([]string{}, f.Command...), f.Args...) {
			if err := jobenv.CheckArg(a); err != nil {
				add(p, "command/args item %d: %v", j, err)
			}
		}
		tseen := map[string]bool{}
		for j, t := range f.Triggers {
			tp := fmt.Sprintf("%s.triggers[%d]", p, j)
			if tseen[t.Name] {
				add(tp+".name", "trigger %q is defined twice for this function", t.Name)
			}
			tseen[t.Name] = true
			switch {
			case t.timer != nil:
				zone := t.timer.Timezone
				if zone == "" {
					zone = c.Timezone
				}
				loc, err := time.LoadLocation(zone)
				if err != nil {
					add(tp+".timezone", "unknown time zone %q", zone)
					continue
				}
				if _, err := scfcron.Parse(t.timer.Cron, loc); err != nil {
					add(tp+".cron", "%v", err)
				}
			case t.http != nil:
				if msg := routes.add(f.Name, t.Name, *t.http); msg != "" {
					add(tp+".path", "%s", msg)
				}
				if a := t.http.Auth; a != nil {
					switch {
					case a.Bearer != nil && a.HMACSHA256 != nil:
						add(tp+".auth", "choose bearer or hmac_sha256, not both")
					case a.Bearer == nil && a.HMACSHA256 == nil:
						add(tp+".auth", "set bearer or hmac_sha256 (omit auth for none)")
					case a.Bearer != nil && a.Bearer.TokenEnv == "":
						add(tp+".auth.bearer.token_env", "required")
					case a.HMACSHA256 != nil && a.HMACSHA256.SecretEnv == "":
						add(tp+".auth.hmac_sha256.secret_env", "required")
					case a.HMACSHA256 != nil && a.HMACSHA256.Scheme != SchemeJobgate && a.HMACSHA256.Scheme != SchemeGitHub && a.HMACSHA256.Scheme != SchemeStripe && a.HMACSHA256.Scheme != SchemeStandard:
						add(tp+".auth.hmac_sha256.scheme", "unknown scheme %q (jobgate, github, stripe, standard)", a.HMACSHA256.Scheme)
					case a.HMACSHA256 != nil && a.HMACSHA256.Scheme == SchemeStandard && !strings.EqualFold(t.http.DedupeHeader, "Webhook-Id"):
						add(tp+".dedupe_header", "the standard scheme signs webhook-id, which is its dedupe key: leave dedupe_header out")
					case a.HMACSHA256 != nil && (a.HMACSHA256.ToleranceS < 1 || a.HMACSHA256.ToleranceS > 86400):
						add(tp+".auth.hmac_sha256.tolerance_s", "must be 1..86400")
					}
				}
				for _, h := range t.http.ForwardHeaders {
					if http.CanonicalHeaderKey(h) == "" || strings.ContainsAny(h, " :") {
						add(tp+".forward_headers", "bad header name %q", h)
					}
				}
			case t.queue != nil:
				if t.Type == TriggerAMQP && (t.queue.URL == "") == (t.queue.URLEnv == "") {
					add(tp, "set url or url_env (one of them)")
				}
			}
		}
	}
	if gw := c.Gateway; gw.WriteTimeoutS <= gw.WaitTimeoutS {
		add("gateway.write_timeout_s", "must exceed wait_timeout_s (%d), or invoke?wait=scheduled answers are cut off", gw.WaitTimeoutS)
	}
	for host, r := range c.Registries {
		if r.PasswordEnv != "" && r.Username == "" {
			add("registries."+host, "password_env needs username")
		}
	}
	c.validateNetwork(add)
	return probs
}

func hasReservedPrefix(k string) bool {
	for _, p := range reservedEnvPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}
