package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSampleConfigParses(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "sample", "jobgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	filled := strings.NewReplacer("@REDIS@", "127.0.0.1:6399", "@CONTAINERD@", "/run/c.sock", "@GATEWAY@", "127.0.0.1:9100",
		"@STATE@", "/var/lib/x", "@REGISTRY@", "127.0.0.1:5000").Replace(string(raw))
	cfg, err := Parse(strings.NewReader(filled), "sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Function("hello")
	if f == nil || f.Namespace != "default" || *f.Retry.Max != 2 || f.Retry.DelayS != 60 || f.MaxEventAgeS != 21600 || f.Network != "bridge" {
		t.Fatalf("defaults: %+v", f)
	}
	if cfg.Timezone != "Asia/Shanghai" || cfg.RetentionH != 72 || cfg.Worker.StopGrace().Seconds() != 10 {
		t.Fatalf("global defaults: %+v", cfg)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string // each must appear in the error
	}{
		{"unknown top-level key", "redis: {addr: x}\nfunctoins: []\n", []string{"t.yaml:2: functoins: unknown key"}},
		{"unknown nested key", "functions:\n  - name: a\n    image: r/a:1\n    memroy_mb: 5\n", []string{"t.yaml:4: functions[0].memroy_mb: unknown key"}},
		{"wrong type", "functions:\n  - name: a\n    image: r/a:1\n    memory_mb: lots\n", []string{"functions[0].memory_mb", "integer"}},
		{"missing image", "functions:\n  - name: a\n", []string{"functions[0]", "image"}},
		{"bad name", "functions:\n  - name: 9a\n    image: r/a:1\n", []string{"functions[0].name", "does not match pattern"}},
		{"timeout over 24h", "functions:\n  - name: a\n    image: r/a:1\n    timeout_s: 86401\n", []string{"functions[0].timeout_s", "maximum"}},
		{"duplicate", "functions:\n  - {name: a, image: r/a:1}\n  - {name: a, image: r/a:2}\n", []string{"t.yaml:3: functions[1].name", "already defined"}},
		{"bad image ref", "functions:\n  - {name: a, image: 'UPPER/Case:1'}\n", []string{"functions[0].image", "not an image reference"}},
		{"reserved env", "functions:\n  - name: a\n    image: r/a:1\n    env: {SCF_FUNCTIONNAME: x}\n", []string{"functions[0].env.SCF_FUNCTIONNAME", "reserved"}},
		{"env too large", "functions:\n  - name: a\n    image: r/a:1\n    env: {BIG: " + strings.Repeat("x", 131068) + "}\n", []string{"functions[0].env", "131071"}},
		{"bad zone", "timezone: Mars/Olympus\n", []string{"timezone", "unknown time zone"}},
		{"destination both", "functions:\n  - name: a\n    image: r/a:1\n    on_success: [{url: 'http://x/', function: a}]\n", []string{"functions[0].on_success[0]", "set one target"}},
		{"destination unknown function", "functions:\n  - name: a\n    image: r/a:1\n    on_failure: [{function: b}]\n", []string{"functions[0].on_failure[0].function", `no function "b"`}},
		{"destination bad url", "functions:\n  - name: a\n    image: r/a:1\n    on_failure: [{url: 'ftp://x/'}]\n", []string{"functions[0].on_failure[0].url", "not an http(s) URL"}},
		{"max_event_mb without file", "functions:\n  - name: a\n    image: r/a:1\n    max_event_mb: 8\n", []string{"functions[0].max_event_mb", "large_events: file"}},
		{"addr and url", "redis: {addr: 'a:1', url: 'redis://b:2'}\n", []string{"redis", "not both"}},
		{"addr and sentinel", "redis: {addr: 'a:1', sentinel: {master: m, addrs: ['s:1']}}\n", []string{"redis", "one of addr/url, sentinel or cluster"}},
		{"sentinel without master", "redis: {sentinel: {addrs: ['s:1']}}\n", []string{"redis.sentinel", "master"}},
		{"cluster without nodes", "redis: {cluster: {addrs: []}}\n", []string{"redis.cluster.addrs", "minItems"}},
		{"negative wait", "redis: {wait_replicas: -1}\n", []string{"redis.wait_replicas", "minimum"}},
		{"kafka without brokers", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: kafka, name: t, topic: x, group: g}]\n", []string{"functions[0].triggers[0]", "brokers"}},
		{"nats unknown key", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: nats, name: n, url: 'nats://x', stream: S, durable: d, topic: x}]\n", []string{"functions[0].triggers[0].topic: unknown key"}},
		{"bad cron", "functions:\n  - name: a\n    image: r/a:1\n    triggers:\n      - {type: timer, name: t, cron: '0 61 * * * * *'}\n", []string{"t.yaml:5: functions[0].triggers[0].cron", `"0 61 * * * * *"`, "field minute"}},
		{"timer without cron", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: timer, name: t}]\n", []string{"functions[0].triggers[0]", "cron"}},
		{"unknown trigger key", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: timer, name: t, cron: '* * * * *', crn: x}]\n", []string{"functions[0].triggers[0].crn: unknown key"}},
		{"bad trigger zone", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: timer, name: t, cron: '* * * * *', timezone: Nowhere/Land}]\n", []string{"triggers[0].timezone", "unknown time zone"}},
		{"http path on the API", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: http, name: h, path: /v1/functions/x}]\n", []string{"triggers[0].path", "collides with the API"}},
		{"http path twice", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: http, name: h, path: '/hooks/{x}'}]\n  - name: b\n    image: r/b:1\n    triggers: [{type: http, name: h, path: '/hooks/{y}'}]\n", []string{"functions[1].triggers[0].path", "cannot be served"}},
		{"http path conflicting with an API route", "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: http, name: h, path: '/{a}/invocations', methods: [ANY]}]\n", []string{"triggers[0].path", "cannot be served", "conflicts"}},
		{"not yaml", "functions: [\n", []string{"not valid YAML"}},
		{"bad subnet", "worker: {network: {subnet: 10.89.0.0/33}}\n", []string{"worker.network.subnet", "not an IPv4 CIDR"}},
		{"tiny subnet", "worker: {network: {subnet: 10.89.0.0/30}}\n", []string{"worker.network.subnet", "too small"}},
		{"bad dns", "worker:\n  network:\n    dns: [nameserver]\n", []string{"t.yaml:3: worker.network.dns[0]", "not an IPv4 address"}},
		{"bad egress cidr", "functions:\n  - name: a\n    image: r/a:1\n    egress:\n      allow: ['10.0.5.0/33:5432']\n", []string{"t.yaml:5: functions[0].egress.allow[0]", "not a CIDR"}},
		{"bad egress port", "functions:\n  - name: a\n    image: r/a:1\n    egress: {allow: ['10.0.5.0/24:99999']}\n", []string{"functions[0].egress.allow[0]", "port must be 1..65535"}},
		{"deny with a port", "worker: {network: {egress: {deny: ['10.0.0.0/8:22']}}}\n", []string{"worker.network.egress.deny[0]", "takes no port"}},
		{"ipv6 egress", "functions:\n  - name: a\n    image: r/a:1\n    egress: {allow: ['fd00::/8']}\n", []string{"functions[0].egress.allow[0]", "IPv6"}},
		{"egress on none", "functions:\n  - name: a\n    image: r/a:1\n    network: none\n    egress: {allow: ['1.2.3.4']}\n", []string{"t.yaml:5: functions[0].egress", "applies only to network: bridge"}},
		{"egress on host", "functions:\n  - name: a\n    image: r/a:1\n    network: host\n    egress: {deny: ['1.2.3.4']}\n", []string{"functions[0].egress", "network: host"}},
		{"restricted with cap_add", "worker: {security: restricted}\nfunctions:\n  - {name: a, image: r/a:1, cap_add: [CAP_NET_ADMIN]}\n", []string{"functions[0].cap_add", "drops every capability"}},
		{"restricted as root", "functions:\n  - {name: a, image: r/a:1, security: restricted, user: '0:0'}\n", []string{"functions[0].user", "non-root"}},
		{"unknown security", "functions:\n  - {name: a, image: r/a:1, security: lax}\n", []string{"functions[0].security"}},
		{"unknown network", "functions:\n  - name: a\n    image: r/a:1\n    network: vpc\n", []string{"functions[0].network"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.yaml), "t.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// Parse reads only its input; Resolve is where the environment is
// consulted (unset secrets, missing files, the node name).
func TestParseIsPureResolveChecksTheEnvironment(t *testing.T) {
	t.Parallel()
	doc := "worker: {docker_config: /surely/not/here.json}\nfunctions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: http, name: h, path: /h, auth: {hmac_sha256: {secret_env: JG_SURELY_UNSET}}}]\n"
	cfg, err := Parse(strings.NewReader(doc), "t.yaml")
	if err != nil {
		t.Fatalf("Parse looked at the environment: %v", err)
	}
	if cfg.Worker.Node != "" {
		t.Fatalf("Parse resolved the node name: %q", cfg.Worker.Node)
	}
	err = Resolve(cfg, "t.yaml")
	for _, want := range []string{"functions[0].triggers[0].auth.hmac_sha256.secret_env: environment variable JG_SURELY_UNSET is not set", "worker.docker_config"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Resolve error lacks %q: %v", want, err)
		}
	}
	if cfg.Worker.Node == "" {
		t.Fatal("Resolve left the node name empty")
	}
}

// A trigger token or secret that is set but empty is refused: an HMAC
// keyed with "" is computable by anyone (issue 10, finding 1).
func TestEmptyTriggerSecretIsAConfigError(t *testing.T) {
	t.Setenv("JG_EMPTY_SECRET", "")
	for _, auth := range []string{"{hmac_sha256: {secret_env: JG_EMPTY_SECRET}}", "{bearer: {token_env: JG_EMPTY_SECRET}}", "{}"} {
		doc := "functions:\n  - name: a\n    image: r/a:1\n    triggers: [{type: http, name: h, path: /h, auth: " + auth + "}]\n"
		_, err := Load(writeTemp(t, doc))
		if err == nil || !(strings.Contains(err.Error(), "JG_EMPTY_SECRET is empty") || strings.Contains(err.Error(), "set bearer or hmac_sha256")) {
			t.Errorf("auth %s: %v", auth, err)
		}
	}
}

// Keys are decoded over Default(): what a file leaves out keeps its
// default, and a zero that is a valid setting (a pointer field) stays
// zero.
func TestDecodeOverDefaults(t *testing.T) {
	t.Parallel()
	doc := "worker: {stop_grace_s: 0, concurrency: 9}\nfunctions:\n  - {name: a, image: r/a:1, retry: {max: 0}}\n  - name: b\n    image: r/b:1\n    triggers:\n      - {type: kafka, name: k, brokers: [b:9092], topic: t, group: g, batch: {max: 3}}\n      - {type: timer, name: t, cron: '* * * * *'}\n"
	cfg, err := Parse(strings.NewReader(doc), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	if *cfg.Worker.StopGraceS != 0 || cfg.Worker.Concurrency != 9 || cfg.Worker.PullTimeoutS != def.Worker.PullTimeoutS || *cfg.Worker.TagRecheckMs != 2000 {
		t.Fatalf("worker %+v", cfg.Worker)
	}
	a, b := cfg.Function("a"), cfg.Function("b")
	if *a.Retry.Max != 0 || a.Retry.DelayS != 60 || *b.Retry.Max != 2 || b.MemoryMB != 128 || b.Namespace != "default" {
		t.Fatalf("functions %+v %+v", a, b)
	}
	q := b.Triggers[0].Queue()
	if q.Batch.Max != 3 || q.Batch.WaitMs != 1000 || q.MaxPending != 10000 || q.Prefetch != 6 || q.Start != "latest" {
		t.Fatalf("kafka options %+v", q)
	}
	if tm := b.Triggers[1].Timer(); tm.Cron != "* * * * *" || tm.Catchup != "last" || tm.CatchupWindowS != 300 {
		t.Fatalf("timer options %+v", tm)
	}
}

// A config built in code becomes what Parse makes of the same YAML.
func TestCompleteRoundTripsThroughParse(t *testing.T) {
	t.Parallel()
	grace := 0
	c := &Config{Worker: Worker{Node: "n1", StopGraceS: &grace}, Functions: []Function{{Name: "f", Image: "r/f:1",
		Triggers: []Trigger{{Type: TriggerHTTP, Name: "h", Options: map[string]any{"path": "/in"}}}}}}
	if err := Complete(c, "code"); err != nil {
		t.Fatal(err)
	}
	if c.Redis.Addr != DefaultRedisAddr || c.Worker.Node != "n1" || *c.Worker.StopGraceS != 0 || c.Functions[0].MemoryMB != 128 {
		t.Fatalf("%+v", c)
	}
	if h := c.Functions[0].Triggers[0].HTTP(); h.Path != "/in" || len(h.Methods) != 1 || h.Methods[0] != "POST" {
		t.Fatalf("http options %+v", h)
	}
	bad := &Config{Functions: []Function{{Name: "9bad", Image: "r/f:1"}}}
	if err := Complete(bad, "code"); err == nil || !strings.Contains(err.Error(), "functions[0].name") {
		t.Fatalf("Complete accepted a bad name: %v", err)
	}
}

func TestEmptyConfigGetsDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(strings.NewReader(""), "empty.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{cfg.Redis.Addr, cfg.Containerd.Address, cfg.Containerd.Namespace, cfg.Gateway.Listen, cfg.Region}
	want := []string{"127.0.0.1:6379", "/run/containerd/containerd.sock", "jobgate", "127.0.0.1:9100", "ap-guangzhou"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got)\n%s", d)
	}
}

func TestPointerToPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"/": "", "/functions/0/image": "functions[0].image", "/registries/a~1b": "registries.a/b"} {
		if got := pointerToPath(in); got != want {
			t.Errorf("%s → %q, want %q", in, got, want)
		}
	}
}

func writeTemp(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jobgate.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The sample config deploy/up.sh writes (its placeholders filled as the
// script fills them) is valid and shows every kind of sample function.
func TestSampleConfigIsValid(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../deploy/sample/jobgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.NewReplacer("@REDIS@", "127.0.0.1:6399", "@CONTAINERD@", "/var/lib/jobgate-dev/containerd/containerd.sock",
		"@GATEWAY@", "127.0.0.1:9100", "@STATE@", "/var/lib/jobgate-dev", "@REGISTRY@", "127.0.0.1:5000").Replace(string(raw))
	cfg, err := Parse(strings.NewReader(doc), "deploy/sample/jobgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hello", "slow", "flaky"} {
		if cfg.Function(name) == nil {
			t.Errorf("the sample lacks function %s", name)
		}
	}
}

// Every YAML example in docs/OPERATIONS.md and README.md parses: a whole
// config as it is, a `triggers:` fragment as a function's triggers.
func TestDocsYAMLExamplesParse(t *testing.T) {
	t.Parallel()
	n := 0
	for _, doc := range []string{"../../docs/OPERATIONS.md", "../../README.md"} {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(string(raw), "```yaml\n")
		for i, part := range parts[1:] {
			block, _, ok := strings.Cut(part, "```")
			if !ok {
				t.Fatalf("%s: yaml block %d is not closed", doc, i+1)
			}
			n++
			if strings.HasPrefix(block, "triggers:") {
				block = "functions:\n  - name: example\n    image: registry.example.com/demo/hello:1\n" + indent(block, "    ")
			}
			if _, err := Parse(strings.NewReader(block), fmt.Sprintf("%s yaml block %d", doc, i+1)); err != nil {
				t.Errorf("%v", err)
			}
		}
	}
	if n < 3 {
		t.Fatalf("only %d yaml examples found", n)
	}
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestEgressRules(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"10.0.5.0/24:5432": "10.0.5.0/24:5432", "10.0.5.9/24": "10.0.5.0/24", "1.2.3.4": "1.2.3.4/32", "1.2.3.4:53": "1.2.3.4/32:53"} {
		r, err := ParseEgressRule(in, true)
		if err != nil || r.String() != want {
			t.Errorf("%q: %v %v, want %s", in, r, err, want)
		}
	}
}

func TestHostNetworkWarns(t *testing.T) {
	t.Parallel()
	cfg, err := Parse(strings.NewReader("functions:\n  - {name: a, image: r/a:1, network: host}\n  - {name: b, image: r/b:1}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Warnings()
	if len(w) != 1 || w[0].Path != "functions[0].network" || !strings.Contains(w[0].Message, "loopback included") {
		t.Fatalf("warnings: %+v", w)
	}
}

func TestSubnetOverlapsARoute(t *testing.T) {
	t.Parallel()
	routes := filepath.Join(t.TempDir(), "route")
	// Iface Destination Gateway Flags RefCnt Use Metric Mask: 10.89.0.0/16 on eth1, 192.168.1.0/24 on eth0, a default.
	table := "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n" +
		"eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n" +
		"eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n" +
		"eth1\t0000590A\t00000000\t0001\t0\t0\t0\t0000FFFF\n"
	if err := os.WriteFile(routes, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := hostRoutes(routes)
	if err != nil || len(got) != 3 || got[1].dst.String() != "192.168.1.0/24" || got[2].dst.String() != "10.89.0.0/16" {
		t.Fatalf("routes: %+v %v", got, err)
	}
	check := func(subnet, bridge string) []string {
		c := Default()
		c.Functions = []Function{{Name: "a", Network: NetworkBridge}}
		c.Worker.Network.Subnet, c.Worker.Network.Bridge = subnet, bridge
		var probs []string
		c.checkSubnetRoutes(func(path, format string, args ...any) { probs = append(probs, path+": "+fmt.Sprintf(format, args...)) }, routes)
		return probs
	}
	if p := check("10.89.0.0/16", "jobgate0"); len(p) != 1 || !strings.Contains(p[0], "overlaps this host's route to 10.89.0.0/16 (dev eth1)") {
		t.Errorf("10.89.0.0/16 beside eth1's route: %v", p)
	}
	if p := check("10.89.0.0/16", "eth1"); len(p) != 0 {
		t.Errorf("the bridge's own route is no overlap: %v", p)
	}
	if p := check("192.168.0.0/16", "jobgate0"); len(p) != 1 {
		t.Errorf("192.168.0.0/16 contains eth0's 192.168.1.0/24: %v", p)
	}
	if p := check("10.90.0.0/16", "jobgate0"); len(p) != 0 {
		t.Errorf("10.90.0.0/16 overlaps nothing (the default route aside): %v", p)
	}
}
