package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"gopkg.in/yaml.v3"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/internal/jobenv"
	"github.com/jobgate/jobgate/internal/scfcron"
	"github.com/jobgate/jobgate/schemas"
)

// Problem is one thing wrong in a config file.
type Problem struct {
	Path    string // key path, e.g. functions[0].image
	Line    int    // 1-based, 0 when unknown
	Message string
}

// Error lists every problem found in one file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		path := p.Path
		if path == "" {
			path = "(top level)"
		}
		fmt.Fprintf(&b, ": %s: %s", path, p.Message)
	}
	return b.String()
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a YAML config; name is used in error messages only.
func Parse(r io.Reader, name string) (*Config, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, &Error{File: name, Problems: []Problem{{Message: "not valid YAML: " + err.Error()}}}
	}
	if len(root.Content) == 0 {
		root = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}

	// Schema first: it reports every problem with its key path.
	if probs, err := checkSchema(&root); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	} else if len(probs) > 0 {
		return nil, &Error{File: name, Problems: probs}
	}

	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Problems: []Problem{{Message: err.Error()}}}
	}
	cfg.applyDefaults()
	if probs := cfg.validate(); len(probs) > 0 {
		for i := range probs {
			probs[i].Line = lineOf(&root, probs[i].Path)
		}
		return nil, &Error{File: name, Problems: probs}
	}
	return &cfg, nil
}

func checkSchema(root *yaml.Node) ([]Problem, error) {
	var doc any
	if err := root.Decode(&doc); err != nil {
		return []Problem{{Message: err.Error()}}, nil
	}
	if doc == nil {
		doc = map[string]any{}
	}
	// Round-trip through JSON so the validator sees JSON types.
	js, err := json.Marshal(doc)
	if err != nil {
		return []Problem{{Message: "cannot be represented as JSON: " + err.Error()}}, nil
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, err
	}
	sch, err := schemas.Compile(schemas.Config)
	if err != nil {
		return nil, err
	}
	vs, err := schemas.Validate(sch, inst)
	if err != nil {
		return nil, err
	}
	var probs []Problem
	for _, v := range vs {
		path := pointerToPath(v.Pointer)
		probs = append(probs, Problem{Path: path, Line: lineOf(root, path), Message: v.Message})
	}
	return probs, nil
}

// Complete applies defaults to a config built in code and checks what the
// schema cannot; name is used in errors.
func Complete(c *Config, name string) error {
	c.applyDefaults()
	if probs := c.validate(); len(probs) > 0 {
		return &Error{File: name, Problems: probs}
	}
	return nil
}

// pointerToPath turns /functions/0/image into functions[0].image.
func pointerToPath(ptr string) string {
	var b strings.Builder
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		if _, err := strconv.Atoi(tok); err == nil {
			fmt.Fprintf(&b, "[%s]", tok)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

var pathToken = regexp.MustCompile(`[^.\[\]]+|\[\d+\]`)

// lineOf finds the line of the deepest node on path that exists.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, tok := range pathToken.FindAllString(path, -1) {
		var next *yaml.Node
		if strings.HasPrefix(tok, "[") {
			i, _ := strconv.Atoi(strings.Trim(tok, "[]"))
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
			}
		} else if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == tok {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}

func (c *Config) applyDefaults() {
	if c.Redis.Addr == "" && c.Redis.URL == "" {
		c.Redis.Addr = "127.0.0.1:6379"
	}
	if c.Redis.Prefix == "" {
		c.Redis.Prefix = "jobgate"
	}
	if c.Containerd.Address == "" {
		c.Containerd.Address = "/run/containerd/containerd.sock"
	}
	if c.Containerd.Namespace == "" {
		c.Containerd.Namespace = "jobgate"
	}
	if c.Containerd.Snapshotter == "" {
		c.Containerd.Snapshotter = "overlayfs"
	}
	if c.Gateway.Listen == "" {
		c.Gateway.Listen = "127.0.0.1:9100"
	}
	if c.Gateway.WaitTimeoutS == 0 {
		c.Gateway.WaitTimeoutS = 60
	}
	if c.Worker.Node == "" {
		c.Worker.Node = os.Getenv("JOBGATE_NODE") // e.g. the Kubernetes node name
	}
	if c.Worker.Node == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Worker.Node = h
	}
	if c.Worker.Concurrency == 0 {
		c.Worker.Concurrency = 4
	}
	if c.Worker.StateDir == "" {
		c.Worker.StateDir = "/var/lib/jobgate"
	}
	if c.Worker.PullTimeoutS == 0 {
		c.Worker.PullTimeoutS = 300
	}
	if c.Worker.ShimGroup == nil {
		on := true
		c.Worker.ShimGroup = &on
	}
	if c.Worker.TagRecheckMs == nil {
		ms := 2000
		c.Worker.TagRecheckMs = &ms
	}
	if c.Worker.StopGraceS == nil {
		g := 10
		c.Worker.StopGraceS = &g
	}
	if c.Worker.DiskLimitMB == 0 {
		c.Worker.DiskLimitMB = 512
	}
	if c.Worker.DiskPollMs == 0 {
		c.Worker.DiskPollMs = 1000
	}
	if c.Worker.LimitRetryS == 0 {
		c.Worker.LimitRetryS = 60
	}
	if c.Worker.MaxImageMB == 0 {
		c.Worker.MaxImageMB = 1024
	}
	if c.Worker.LogMaxBytes == 0 {
		c.Worker.LogMaxBytes = 16 << 20
	}
	if c.Region == "" {
		c.Region = "ap-guangzhou"
	}
	if c.Timezone == "" {
		c.Timezone = "Asia/Shanghai"
	}
	if c.RetentionH == 0 {
		c.RetentionH = 72 // SCF keeps async event status 3 days
	}
	for i := range c.Functions {
		f := &c.Functions[i]
		if f.Namespace == "" {
			f.Namespace = "default"
		}
		if f.MemoryMB == 0 {
			f.MemoryMB = 128
		}
		if f.TimeoutS == 0 {
			f.TimeoutS = 900
		}
		if f.Retry.Max == nil {
			two := 2 // SCF RetryNum default
			f.Retry.Max = &two
		}
		if f.Retry.DelayS == 0 {
			f.Retry.DelayS = 60
		}
		if f.MaxEventAgeS == 0 {
			f.MaxEventAgeS = 21600 // SCF MsgTTL default: 6 h
		}
		if f.Network == "" {
			f.Network = "none"
		}
	}
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnvPrefixes are SCF's reserved prefixes plus jobgate's own.
var reservedEnvPrefixes = []string{"SCF_", "QCLOUD_", "TENCENTCLOUD_", "JOBGATE_"}

func (c *Config) validate() []Problem {
	var probs []Problem
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if c.Redis.Addr != "" && c.Redis.URL != "" {
		add("redis", "set addr or url, not both")
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		add("timezone", "unknown time zone %q", c.Timezone)
	}
	if c.Worker.DockerConfig != "" {
		if _, err := os.Stat(c.Worker.DockerConfig); err != nil {
			add("worker.docker_config", "%v", err)
		}
	}
	if c.Redis.PasswordEnv != "" {
		if _, ok := os.LookupEnv(c.Redis.PasswordEnv); !ok {
			add("redis.password_env", "environment variable %s is not set", c.Redis.PasswordEnv)
		}
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
			switch t.Type {
			case TriggerTimer:
				o, err := t.Timer()
				if err != nil {
					add(tp, "%v", err)
					continue
				}
				zone := o.Timezone
				if zone == "" {
					zone = c.Timezone
				}
				loc, err := time.LoadLocation(zone)
				if err != nil {
					add(tp+".timezone", "unknown time zone %q", zone)
					continue
				}
				if _, err := scfcron.Parse(o.Cron, loc); err != nil {
					add(tp+".cron", "%v", err)
				}
			case TriggerHTTP:
				o, err := t.HTTP()
				if err != nil {
					add(tp, "%v", err)
					continue
				}
				if msg := routes.add(f.Name, t.Name, o); msg != "" {
					add(tp+".path", "%s", msg)
				}
				if a := o.Auth; a != nil {
					if a.Bearer != nil && a.HMACSHA256 != nil {
						add(tp+".auth", "choose bearer or hmac_sha256, not both")
					}
					for _, env := range []string{envOf(a.Bearer), envOfHMAC(a.HMACSHA256)} {
						if env == "" {
							continue
						}
						if _, ok := os.LookupEnv(env); !ok {
							add(tp+".auth", "environment variable %s is not set", env)
						}
					}
				}
			case TriggerKafka, TriggerNATS, TriggerAMQP, TriggerRedisStream:
				o, err := t.Queue()
				if err != nil {
					add(tp, "%v", err)
					continue
				}
				if t.Type == TriggerAMQP && (o.URL == "") == (o.URLEnv == "") {
					add(tp, "set url or url_env (one of them)")
				}
				for _, env := range []string{o.PasswordEnv, o.URLEnv} {
					if env == "" {
						continue
					}
					if _, ok := os.LookupEnv(env); !ok {
						add(tp, "environment variable %s is not set", env)
					}
				}
				if o.SASL != nil {
					if _, ok := os.LookupEnv(o.SASL.PasswordEnv); !ok {
						add(tp+".sasl", "environment variable %s is not set", o.SASL.PasswordEnv)
					}
				}
			default:
				add(tp+".type", "unknown trigger type %s", t.Type)
			}
		}
	}
	for host, r := range c.Registries {
		if r.PasswordEnv != "" && r.Username == "" {
			add("registries."+host, "password_env needs username")
		}
	}
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
