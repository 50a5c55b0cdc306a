// Package config parses and validates jobgate's YAML configuration.
//
// Parse is strict and pure: the document is first checked against
// schemas/config.schema.json (unknown keys, wrong types and bad values are
// reported with their key path), then decoded over Default() (functions
// over DefaultFunction(), each trigger's options once into its typed
// form, with that trigger's defaults), then checked for what a schema
// cannot express (duplicate names, image references, env limits, cron,
// routes). Resolve is the separate step that consults the environment:
// the node name, and that every variable and file the config names
// exists. Load does both.
//
// Defaults live in Default, DefaultFunction and the trigger decoders, and
// nowhere else. A field that is a pointer is one where zero is a valid
// setting that differs from the default (stop_grace_s: 0, retry.max: 0):
// nil means "not set". Every other zero means "not set" only in Go-built
// configs, which Complete round-trips through Parse.
package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/keyspace"
)

// Config is the whole configuration file.
type Config struct {
	Redis      Redis               `yaml:"redis,omitempty"`
	Containerd Containerd          `yaml:"containerd,omitempty"`
	Gateway    Gateway             `yaml:"gateway,omitempty"`
	Worker     Worker              `yaml:"worker,omitempty"`
	Region     string              `yaml:"region,omitempty"`
	AppID      string              `yaml:"appid,omitempty"`
	UIN        string              `yaml:"uin,omitempty"`
	Timezone   string              `yaml:"timezone,omitempty"`
	RetentionH int                 `yaml:"retention_h,omitempty"`
	DeadLetter DeadLetter          `yaml:"deadletter,omitempty"`
	Submit     Submit              `yaml:"submit,omitempty"`
	Registries map[string]Registry `yaml:"registries,omitempty"`
	Functions  []Function          `yaml:"functions,omitempty"`
}

// Redis says where the queue, records and logs live.
type Redis struct {
	Addr        string `yaml:"addr,omitempty"`
	URL         string `yaml:"url,omitempty"`
	DB          int    `yaml:"db,omitempty"`
	Username    string `yaml:"username,omitempty"`
	PasswordEnv string `yaml:"password_env,omitempty"`
	// Prefix namespaces jobgate's own keys (records, logs); asynq's keys
	// are always "asynq:{queue}:...".
	Prefix string `yaml:"prefix,omitempty"`
	// Sentinel or Cluster replace addr/url: a master found through
	// Sentinel, or a Redis Cluster. username/password_env are the data
	// nodes' credentials in all three.
	Sentinel *RedisSentinel `yaml:"sentinel,omitempty"`
	Cluster  *RedisCluster  `yaml:"cluster,omitempty"`
	// TLS for every connection (data nodes and sentinels); a rediss://
	// URL turns it on too.
	TLS *RedisTLS `yaml:"tls,omitempty"`
	// WaitReplicas > 0: a submission is answered 202 only once this many
	// replicas have its write (WAIT), so a failover cannot lose it.
	WaitReplicas int `yaml:"wait_replicas,omitempty"`
	// WaitTimeoutMs bounds that wait (default 1000).
	WaitTimeoutMs int `yaml:"wait_timeout_ms,omitempty"`
}

// RedisSentinel finds the master named Master through the sentinels.
type RedisSentinel struct {
	Master string   `yaml:"master"`
	Addrs  []string `yaml:"addrs"`
	// The sentinels' own credentials (requirepass / ACL), if any.
	Username    string `yaml:"username,omitempty"`
	PasswordEnv string `yaml:"password_env,omitempty"`
}

// RedisCluster is a Redis Cluster reached through any of Addrs.
type RedisCluster struct {
	Addrs []string `yaml:"addrs"`
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	CAFile             string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`     // trust these CAs (default: the system's)
	CertFile           string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"` // client certificate (tls-auth-clients)
	KeyFile            string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
	ServerName         string `yaml:"server_name,omitempty" json:"server_name,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty" json:"insecure_skip_verify,omitempty"`
}

// KeyPrefix is the prefix of jobgate's keys as stored: Prefix, with
// asynq's queue's hash tag on Redis Cluster (keyspace.ClusterPrefix).
func (r Redis) KeyPrefix() string {
	if r.Cluster != nil {
		return keyspace.ClusterPrefix(r.Prefix)
	}
	return r.Prefix
}

// WaitTimeout is how long a submission waits for WaitReplicas.
func (r Redis) WaitTimeout() time.Duration {
	if r.WaitTimeoutMs <= 0 {
		return time.Second
	}
	return time.Duration(r.WaitTimeoutMs) * time.Millisecond
}

// DeadLetter bounds the dead-letter list, so that with Redis's noeviction
// policy it can never fill memory and stop every write.
type DeadLetter struct {
	RetentionH int `yaml:"retention_h,omitempty"` // entries expire after this
	Max        int `yaml:"max,omitempty"`         // per function; the oldest go first
}

// Submit tunes the path from event to queued invocation.
type Submit struct {
	// OrphanS: an invocation PENDING and unwritten this long with no live
	// task (a crash between recording and enqueueing) is queued again.
	OrphanS int `yaml:"orphan_s,omitempty"`
	// MaxDelayH bounds how far ahead an invocation may be scheduled
	// (invoke?delay_s, ?at).
	MaxDelayH int `yaml:"max_delay_h,omitempty"`
}

// MaxDelay is Submit.MaxDelayH as a duration.
func (s Submit) MaxDelay() time.Duration { return time.Duration(s.MaxDelayH) * time.Hour }

// OrphanAfter is Submit.OrphanS as a duration.
func (s Submit) OrphanAfter() time.Duration { return time.Duration(s.OrphanS) * time.Second }

// Containerd is the worker host's containerd.
type Containerd struct {
	Address     string `yaml:"address,omitempty"`
	Namespace   string `yaml:"namespace,omitempty"`
	Snapshotter string `yaml:"snapshotter,omitempty"`
}

// Gateway is the HTTP API listener.
type Gateway struct {
	Listen string `yaml:"listen,omitempty"`
	// WaitTimeoutS bounds invoke?wait=scheduled; past it the answer is 202
	// with the record as it stands (the event is queued all the same).
	WaitTimeoutS int `yaml:"wait_timeout_s,omitempty"`
	// Server limits (docs/SECURITY.md). ReadTimeoutS bounds reading a
	// whole request, body included; WriteTimeoutS writing an answer
	// (log streams excepted: FollowMaxS); IdleTimeoutS a keep-alive
	// connection between requests; MaxConns the open connections.
	ReadTimeoutS  int `yaml:"read_timeout_s,omitempty"`
	WriteTimeoutS int `yaml:"write_timeout_s,omitempty"`
	IdleTimeoutS  int `yaml:"idle_timeout_s,omitempty"`
	MaxConns      int `yaml:"max_conns,omitempty"`
	// FollowMaxS ends a `logs?follow=1` stream after this long;
	// FollowStreams caps the streams open at once per token (per client
	// address without tokens).
	FollowMaxS    int `yaml:"follow_max_s,omitempty"`
	FollowStreams int `yaml:"follow_streams,omitempty"`
	// RateLimit is requests per second per token (per client address
	// for webhooks and without tokens); 0 = off. RateBurst is the burst.
	RateLimit float64 `yaml:"rate_limit,omitempty"`
	RateBurst int     `yaml:"rate_burst,omitempty"`
	// MetricsAuth makes /metrics require a token with the read scope.
	MetricsAuth bool `yaml:"metrics_auth,omitempty"`
	// Asynqmon serves asynq's web UI at /asynqmon/ to admin tokens.
	Asynqmon bool `yaml:"asynqmon,omitempty"`
	// AllowedHosts are the Host names an open API (no tokens) answers to
	// (default: the listen host, localhost, 127.0.0.1, ::1; "*": any).
	AllowedHosts []string `yaml:"allowed_hosts,omitempty"`
	// MaxInflightMB bounds the request body bytes the gateway holds at
	// once, all requests together (503 + Retry-After past it).
	MaxInflightMB int `yaml:"max_inflight_mb,omitempty"`
}

// Worker tunes the worker role on this host.
type Worker struct {
	Node string `yaml:"node,omitempty"`
	// Listen serves /metrics, /healthz and /readyz for a worker-only
	// process (the gateway serves them otherwise); "" = off.
	Listen       string `yaml:"listen,omitempty"`
	Concurrency  int    `yaml:"concurrency,omitempty"`
	StateDir     string `yaml:"state_dir,omitempty"`
	PullTimeoutS int    `yaml:"pull_timeout_s,omitempty"`
	// TagRecheckMs: a tag's registry digest, once checked, is trusted this
	// long before the next event checks it again (0 = check every event).
	TagRecheckMs *int  `yaml:"tag_recheck_ms,omitempty"`
	StopGraceS   *int  `yaml:"stop_grace_s,omitempty"`
	LogMaxBytes  int64 `yaml:"log_max_bytes,omitempty"`
	// CapacityMB bounds the sum of memory_mb of the instances running on
	// this worker (0 = no bound).
	CapacityMB int `yaml:"capacity_mb,omitempty"`
	// DiskLimitMB is the writable layer's limit, checked every DiskPollMs.
	DiskLimitMB int `yaml:"disk_limit_mb,omitempty"`
	DiskPollMs  int `yaml:"disk_poll_ms,omitempty"`
	// LimitRetryS is how soon an event over its function's concurrency is
	// tried again (SCF: about a minute).
	LimitRetryS int `yaml:"limit_retry_s,omitempty"`
	// MaxImageMB refuses images whose compressed size is at least this.
	MaxImageMB int `yaml:"max_image_mb,omitempty"`
	// DockerConfig is a docker config.json with registry credentials.
	DockerConfig string `yaml:"docker_config,omitempty"`
	// LoggerBinary is the program containerd's shim runs to capture a job's
	// stdout/stderr; default: jobgate-logger next to the jobgate binary,
	// else the jobgate binary itself.
	LoggerBinary string `yaml:"logger_binary,omitempty"`
	// LeaseS is the worker's node lease: renewed every third of it; a
	// worker that could not renew for two thirds of it kills its own
	// instances (self-fencing). NodeLostS: a node seen without its lease
	// this long has its RUNNING instances ended as NodeLost (503) and
	// retried per their function's policy.
	LeaseS    int `yaml:"lease_s,omitempty"`
	NodeLostS int `yaml:"node_lost_s,omitempty"`
	// ShimGroup [true] lets a job start in the worker's warm containerd
	// shim when no other start is using it (~15 ms less per start); the
	// rest start their own shim, since a shim serializes task creation.
	ShimGroup *bool `yaml:"shim_group,omitempty"`
	// Warm sizes provisioned pools by recent demand (adaptive warm pools).
	Warm Warm `yaml:"warm,omitempty"`
	// Network is the bridge network of `network: bridge` functions.
	Network Network `yaml:"network,omitempty"`
	// Security is the functions' default profile ("default", or
	// "restricted"); a function's own security wins.
	Security string `yaml:"security,omitempty"`
	// Destinations bounds where URL destinations may connect.
	Destinations Destinations `yaml:"destinations,omitempty"`
}

// Destinations: a URL destination may not connect to loopback,
// link-local, private ranges or this host's own addresses, checked on the
// resolved address at dial time, unless Allow (IPv4 or IPv6 CIDRs) lists
// it, e.g. ["127.0.0.1/32"] for a receiver on the same host.
type Destinations struct {
	Allow []string `yaml:"allow,omitempty"`
}

// Network configures the bridge that `network: bridge` jobs attach to
// (worker/jobnet): CNI's bridge and host-local plugins give each job a
// network namespace with an address from Subnet and NAT egress; nftables
// keeps the host, link-local, private ranges and other jobs out of reach.
type Network struct {
	// Subnet is the jobs' IPv4 range; every worker host needs its own
	// when their jobs' traffic may meet (it is NATed, so usually not).
	Subnet string `yaml:"subnet,omitempty"`
	// Bridge is the bridge device; it also names jobgate's nftables
	// tables (inet and bridge families).
	Bridge string `yaml:"bridge,omitempty"`
	// DNS are the jobs' nameservers (empty: the host's, with loopback
	// ones replaced by their upstreams).
	DNS []string `yaml:"dns,omitempty"`
	// Egress is the worker-wide allow/deny list, before each function's.
	Egress Egress `yaml:"egress,omitempty"`
	// PluginDirs are searched for the CNI plugins.
	PluginDirs []string `yaml:"plugin_dirs,omitempty"`
	// Ready is how many namespaces are kept made, so a start takes one
	// instead of waiting for CNI.
	Ready *int `yaml:"ready,omitempty"`
}

// Egress lists destinations: Allow entries are an IPv4 CIDR or address
// with an optional ":port" (TCP and UDP); Deny entries a CIDR or address.
type Egress struct {
	Allow []string `yaml:"allow,omitempty"`
	Deny  []string `yaml:"deny,omitempty"`
}

// Network modes of a function.
const (
	NetworkBridge = "bridge"
	NetworkNone   = "none"
	NetworkHost   = "host"
)

// Warm: with Auto, every function that ran on this worker recently keeps
// warm instances (beyond its fixed `provisioned`): as many as the p90 of
// its per-second peak concurrency over the last minute, at least one
// until it has had no start for IdleS, all of them within MaxMB of
// memory_mb together.
type Warm struct {
	Auto  bool `yaml:"auto,omitempty"`
	MaxMB int  `yaml:"max_mb,omitempty"`
	IdleS int  `yaml:"idle_s,omitempty"`
}

// Default is the configuration of an empty file.
func Default() Config {
	return Config{
		Redis:      Redis{Prefix: "jobgate"},
		Containerd: Containerd{Address: "/run/containerd/containerd.sock", Namespace: "jobgate", Snapshotter: "overlayfs"},
		Gateway: Gateway{Listen: "127.0.0.1:9100", WaitTimeoutS: 60, ReadTimeoutS: 30, WriteTimeoutS: 75, IdleTimeoutS: 120,
			MaxConns: 1024, FollowMaxS: 3600, FollowStreams: 8, RateBurst: 50, MaxInflightMB: 256},
		Worker: Worker{
			Concurrency: 4, StateDir: "/var/lib/jobgate", PullTimeoutS: 300,
			TagRecheckMs: ptr(2000), StopGraceS: ptr(10), ShimGroup: ptr(true),
			LogMaxBytes: 16 << 20, DiskLimitMB: 512, DiskPollMs: 200, LimitRetryS: 60, MaxImageMB: 1024,
			LeaseS: 30, NodeLostS: 120, Warm: Warm{MaxMB: 1024, IdleS: 300},
			Network: Network{Subnet: "10.89.0.0/16", Bridge: "jobgate0", PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"}, Ready: ptr(4)},
		},
		Region:     "ap-guangzhou",
		Timezone:   "Asia/Shanghai", // SCF evaluates timers in UTC+8
		RetentionH: 72,              // SCF keeps async event status 3 days
		DeadLetter: DeadLetter{RetentionH: 168, Max: 10000},
		Submit:     Submit{OrphanS: 60, MaxDelayH: 72},
	}
}

// DefaultFunction is a function's settings before its own keys.
func DefaultFunction() Function {
	return Function{
		Namespace: "default", MemoryMB: 128, TimeoutS: 900,
		Retry:        Retry{Max: ptr(2), DelayS: 60}, // SCF RetryNum default
		MaxEventAgeS: 21600,                          // SCF MsgTTL default: 6 h
		Network:      NetworkBridge,
	}
}

func ptr[T any](v T) *T { return &v }

// Registry holds per-registry pull settings, keyed by host[:port].
type Registry struct {
	Insecure     bool   `yaml:"insecure,omitempty"`
	Username     string `yaml:"username,omitempty"`
	PasswordEnv  string `yaml:"password_env,omitempty"`
	DockerConfig string `yaml:"docker_config,omitempty"`
}

// Function is one job image function.
type Function struct {
	Name         string            `yaml:"name,omitempty"`
	Namespace    string            `yaml:"namespace,omitempty"`
	Image        string            `yaml:"image,omitempty"`
	Command      []string          `yaml:"command,omitempty"`
	Args         []string          `yaml:"args,omitempty"`
	Env          map[string]string `yaml:"env,omitempty"`
	MemoryMB     int               `yaml:"memory_mb,omitempty"`
	TimeoutS     int               `yaml:"timeout_s,omitempty"`
	Concurrency  int               `yaml:"concurrency,omitempty"`
	Retry        Retry             `yaml:"retry,omitempty"`
	MaxEventAgeS int               `yaml:"max_event_age_s,omitempty"`
	// LargeEvents "file": an event too large for SCF_CUSTOM_CONTAINER_EVENT
	// (up to MaxEventMB, default 6) reaches the job as a read-only file
	// (jobenv.EventFilePath); "env" (the default) refuses it, as SCF does.
	LargeEvents  string `yaml:"large_events,omitempty"`
	MaxEventMB   int    `yaml:"max_event_mb,omitempty"`
	Acceleration bool   `yaml:"acceleration,omitempty"`
	Provisioned  int    `yaml:"provisioned,omitempty"`
	Network      string `yaml:"network,omitempty"`
	// Egress (network: bridge) is added to worker.network.egress.
	Egress *Egress `yaml:"egress,omitempty"`
	// Isolation (docs/SECURITY.md). CPU is the cores a job may use (CFS
	// quota; fractional); unset, it has no quota but half the default CPU
	// weight, so the host's own services win under contention. User runs
	// the job as "uid[:gid]" (default: the image's USER). ReadonlyRootfs
	// mounts the image read-only with a writable /tmp tmpfs of
	// worker.disk_limit_mb. CapAdd adds capabilities back (CAP_NET_RAW is
	// dropped by default).
	CPU            float64  `yaml:"cpu,omitempty"`
	User           string   `yaml:"user,omitempty"`
	ReadonlyRootfs bool     `yaml:"readonly_rootfs,omitempty"`
	CapAdd         []string `yaml:"cap_add,omitempty"`
	// Security "restricted" (Kubernetes' restricted level: non-root, no
	// capabilities, read-only rootfs) or "default" (Docker's defaults);
	// unset: worker.security.
	Security string    `yaml:"security,omitempty"`
	Triggers []Trigger `yaml:"triggers,omitempty"`
	// Destinations (Lambda's): where an invocation's final status goes —
	// FINISHED to OnSuccess, FAILED or TIMEOUT to OnFailure (after the
	// retries; a terminated one goes nowhere).
	OnSuccess []Destination `yaml:"on_success,omitempty"`
	OnFailure []Destination `yaml:"on_failure,omitempty"`
}

// Destination is one target of a final status: another function (the
// result is its event) or an HTTP URL (POSTed, signed with SecretEnv's
// key as HTTP triggers' jobgate scheme when set).
type Destination struct {
	Function    string           `yaml:"function,omitempty"`
	URL         string           `yaml:"url,omitempty"`
	SecretEnv   string           `yaml:"secret_env,omitempty"`
	RedisStream *DestRedisStream `yaml:"redis_stream,omitempty"`
	NATS        *DestNATS        `yaml:"nats,omitempty"`
	AMQP        *DestAMQP        `yaml:"amqp,omitempty"`
	Kafka       *DestKafka       `yaml:"kafka,omitempty"`
	// Format "cloudevents" sends the result as a CloudEvent (binary mode
	// to a URL, structured to a queue, the "ce" event to a function).
	Format string `yaml:"format,omitempty"`
	// RetryMax bounds redeliveries after a failed one (default 5; backoff
	// 1 s, 2 s, 4 s … up to 5 min); then the delivery is dead-lettered.
	RetryMax *int `yaml:"retry_max,omitempty"`
}

// DestRedisStream is a Redis stream target: on jobgate's own Redis
// unless Addr is set.
type DestRedisStream struct {
	Addr        string `yaml:"addr,omitempty"`
	PasswordEnv string `yaml:"password_env,omitempty"`
	Stream      string `yaml:"stream"`
}

// DestNATS is a NATS JetStream subject target (a stream must take it).
type DestNATS struct {
	URL         string `yaml:"url"`
	Subject     string `yaml:"subject"`
	Credentials string `yaml:"credentials,omitempty"`
}

// DestAMQP is an AMQP 0-9-1 exchange target.
type DestAMQP struct {
	URL        string `yaml:"url,omitempty"`
	URLEnv     string `yaml:"url_env,omitempty"`
	Exchange   string `yaml:"exchange"`
	RoutingKey string `yaml:"routing_key,omitempty"`
}

// DestKafka is a Kafka topic target.
type DestKafka struct {
	Brokers []string   `yaml:"brokers"`
	Topic   string     `yaml:"topic"`
	SASL    *KafkaSASL `yaml:"sasl,omitempty"`
	TLS     *TLS       `yaml:"tls,omitempty"`
}

// Target names the destination: "function:NAME", its URL as RedactURL shows it, or
// "redis_stream:S", "nats:SUBJECT", "amqp:EXCHANGE/KEY", "kafka:TOPIC".
func (d Destination) Target() string {
	switch {
	case d.Function != "":
		return "function:" + d.Function
	case d.RedisStream != nil:
		return "redis_stream:" + d.RedisStream.Stream
	case d.NATS != nil:
		return "nats:" + d.NATS.Subject
	case d.AMQP != nil:
		return "amqp:" + d.AMQP.Exchange + "/" + d.AMQP.RoutingKey
	case d.Kafka != nil:
		return "kafka:" + d.Kafka.Topic
	}
	return RedactURL(d.URL)
}

// RedactURL is a URL as records, logs and errors show it: no
// credentials, no query, the path only up to its first segment (secret
// paths, Slack-style, stay out).
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	out := u.Scheme + "://" + u.Host
	if p := u.EscapedPath(); p != "" && p != "/" {
		seg, rest, more := strings.Cut(p[1:], "/")
		out += "/" + seg
		if more && rest != "" {
			out += "/…"
		}
	}
	return out
}

// kinds counts the target kinds set (exactly one is valid).
func (d Destination) kinds() int {
	n := 0
	for _, set := range []bool{d.Function != "", d.URL != "", d.RedisStream != nil, d.NATS != nil, d.AMQP != nil, d.Kafka != nil} {
		if set {
			n++
		}
	}
	return n
}

// Retries is RetryMax or its default.
func (d Destination) Retries() int {
	if d.RetryMax == nil {
		return 5
	}
	return *d.RetryMax
}

// Destinations returns the targets of a final status (nil: none).
func (f *Function) Destinations(success bool) []Destination {
	if success {
		return f.OnSuccess
	}
	return f.OnFailure
}

// Retry is SCF's RetryNum for failed exits.
type Retry struct {
	Max    *int `yaml:"max,omitempty"`
	DelayS int  `yaml:"delay_s,omitempty"`
}

// Trigger is one event source of a function: the common keys, the
// options as written (Options, what a config file round-trips) and, once
// parsed, the options decoded for its type (Timer, HTTP, Queue).
type Trigger struct {
	Type    string         `yaml:"type,omitempty"`
	Name    string         `yaml:"name,omitempty"`
	Options map[string]any `yaml:",inline"`

	timer *TimerTrigger
	http  *HTTPTrigger
	queue *QueueTrigger
}

// MaxEventAge is SCF's MsgTTL: older events are not started.
func (f *Function) MaxEventAge() time.Duration { return time.Duration(f.MaxEventAgeS) * time.Second }

// EventsByFile says the function takes events too large for the
// environment as a file (large_events: file).
func (f *Function) EventsByFile() bool { return f.LargeEvents == "file" }

// MaxEventBytes is the largest event the function accepts: max_event_mb
// with large_events: file, else what fits SCF_CUSTOM_CONTAINER_EVENT.
func (f *Function) MaxEventBytes() int {
	if !f.EventsByFile() {
		return jobenv.MaxEventBytes
	}
	if f.MaxEventMB <= 0 {
		return DefaultMaxEventMB << 20
	}
	return f.MaxEventMB << 20
}

// DefaultMaxEventMB is max_event_mb unset (SCF's synchronous invoke
// limit).
const DefaultMaxEventMB = 6

// RetryMax is how many times a failed exit is re-run.
func (f *Function) RetryMax() int { return *f.Retry.Max }

// Timeout returns the function's execution limit.
func (f *Function) Timeout() time.Duration { return time.Duration(f.TimeoutS) * time.Second }

// Function returns the function with that name, or nil.
func (c *Config) Function(name string) *Function {
	for i := range c.Functions {
		if c.Functions[i].Name == name {
			return &c.Functions[i]
		}
	}
	return nil
}

// DeadLetterRetention is how long a dead letter is kept.
func (c *Config) DeadLetterRetention() time.Duration {
	return time.Duration(c.DeadLetter.RetentionH) * time.Hour
}

// Retention is how long records and logs are kept.
func (c *Config) Retention() time.Duration { return time.Duration(c.RetentionH) * time.Hour }

// PullTimeout bounds an image pull.
func (w *Worker) PullTimeout() time.Duration { return time.Duration(w.PullTimeoutS) * time.Second }

// DiskLimitBytes is the writable layer's limit.
func (w *Worker) DiskLimitBytes() int64 { return int64(w.DiskLimitMB) << 20 }

// StopGrace is the time between SIGTERM and SIGKILL.
func (w *Worker) StopGrace() time.Duration { return time.Duration(*w.StopGraceS) * time.Second }

// Security profiles of a function.
const (
	SecurityDefault    = "default"
	SecurityRestricted = "restricted"
)

// Restricted reports whether fn runs under the restricted profile.
func (c *Config) Restricted(fn *Function) bool {
	if fn.Security != "" {
		return fn.Security == SecurityRestricted
	}
	return c.Worker.Security == SecurityRestricted
}
