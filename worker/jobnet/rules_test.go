package jobnet

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/jobgate/jobgate/internal/config"
)

func rule(t *testing.T, s string) config.EgressRule {
	t.Helper()
	r, err := config.ParseEgressRule(s, true)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRulesetOrder pins the precedence the docs promise: a function's
// deny, then its allow, then DNS, the worker's allow, the worker's deny,
// the default deny set, then the public internet.
func TestRulesetOrder(t *testing.T) {
	t.Parallel()
	p := Policy{
		Allow: []config.EgressRule{rule(t, "10.1.0.0/16")}, Deny: []config.EgressRule{rule(t, "198.18.0.0/15")},
		Functions: map[string]FunctionPolicy{"db": {Allow: []config.EgressRule{rule(t, "10.0.5.0/24:5432")}, Deny: []config.EgressRule{rule(t, "10.0.5.7")}}},
	}
	members := []*Namespace{{IP: netip.MustParseAddr("10.89.0.5"), HostVeth: "veth1", Function: "db"}, {IP: netip.MustParseAddr("10.89.0.6"), HostVeth: "veth2"}}
	got := ruleset("jobgate0", netip.MustParsePrefix("10.89.0.0/16"), []netip.Addr{netip.MustParseAddr("10.0.0.2")}, p, members, [2]bool{})
	order := []string{
		"table inet jobgate {",
		"elements = { 10.89.0.5 : jump fn-db }",
		`iifname "jobgate0" ct state established,related accept`,
		`iifname "jobgate0" ip daddr 10.0.0.2 meta l4proto { tcp, udp } th dport 53 accept`,
		`iifname "jobgate0" drop`,
		`iifname "jobgate0" jump egress`,
		`oifname "jobgate0" drop`,
		"chain egress {",
		"ip saddr != 10.89.0.0/16 drop",
		"ip saddr vmap @jobs",
		"ip daddr 10.0.0.2 meta l4proto { tcp, udp } th dport 53 accept",
		"ip daddr 10.1.0.0/16 accept",
		"ip daddr 198.18.0.0/15 drop",
		"ip daddr 10.0.0.0/8 drop",
		"ip daddr 169.254.0.0/16 drop",
		"ip daddr 10.89.0.0/16 drop",
		"accept",
		"chain fn-db {",
		"ip daddr 10.0.5.7/32 drop",
		"ip daddr 10.0.5.0/24 meta l4proto { tcp, udp } th dport 5432 accept",
		"ip saddr 10.89.0.0/16 ip daddr != 10.89.0.0/16 masquerade",
		"table bridge jobgate {",
		`elements = { "veth1", "veth2" }`,
		"iifname @ports drop",
	}
	at := 0
	for _, want := range order {
		i := strings.Index(got[at:], want)
		if i < 0 {
			t.Fatalf("after offset %d, %q is missing (or out of order):\n%s", at, want, got)
		}
		at += i + len(want)
	}
	if strings.Contains(got, "10.89.0.6 :") {
		t.Errorf("a ready namespace (no function) is in the jobs map:\n%s", got)
	}
}

func TestResolvConf(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		hostResolvConf: "# stub\nnameserver 127.0.0.53\nnameserver ::1\nsearch corp.example\noptions edns0 trust-ad\n",
		resolvedConf:   "nameserver 10.0.0.2\nnameserver fd00::53\nnameserver 10.0.0.3\nsearch corp.example\n",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	}
	rc, note, err := newResolvConf(nil, read)
	if err != nil || note != "" {
		t.Fatal(err, note)
	}
	want := "# written by jobgate (worker.network.dns)\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example\n"
	if diff := cmp.Diff(want, string(rc.text)); diff != "" {
		t.Errorf("loopback stub replaced by its upstreams (-want +got):\n%s", diff)
	}
	rc, _, _ = newResolvConf([]netip.Addr{netip.MustParseAddr("198.18.0.2")}, read)
	if !strings.Contains(string(rc.text), "nameserver 198.18.0.2\nsearch corp.example\noptions edns0 trust-ad\n") || strings.Contains(string(rc.text), "127.0.0.53") {
		t.Errorf("configured servers, the host's search and options:\n%s", rc.text)
	}
	delete(files, resolvedConf)
	rc, note, _ = newResolvConf(nil, read)
	if !strings.Contains(string(rc.text), "nameserver 8.8.8.8") || !strings.Contains(note, "worker.network.dns") {
		t.Errorf("no usable server: Docker's fallback and a note, got %q %q", rc.text, note)
	}
	if h := string(hostsFile(netip.MustParseAddr("10.89.0.5"), "jobgate")); !strings.HasSuffix(h, "10.89.0.5\tjobgate\n") {
		t.Errorf("hosts: %q", h)
	}
}
