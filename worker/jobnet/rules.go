package jobnet

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/jobgate/jobgate/internal/config"
)

// DefaultDeny is where a job may not connect unless an allow entry says
// so: the host's loopback, link-local (cloud metadata endpoints), the
// RFC 1918 and shared (CGNAT) ranges, multicast and reserved space. The
// host's own addresses are refused apart from these (the input chain).
var DefaultDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// Policy is the egress policy of one worker: its own allow/deny lists and
// each bridge function's.
type Policy struct {
	Allow, Deny []config.EgressRule
	Functions   map[string]FunctionPolicy
}

// FunctionPolicy is one function's egress entries.
type FunctionPolicy struct {
	Allow, Deny []config.EgressRule
}

// PolicyOf builds the policy a config asks for.
func PolicyOf(cfg *config.Config) Policy {
	p := Policy{Functions: map[string]FunctionPolicy{}}
	p.Allow, p.Deny = config.ParseEgress(&cfg.Worker.Network.Egress)
	for _, f := range cfg.Functions {
		if f.Network != config.NetworkBridge {
			continue
		}
		var fp FunctionPolicy
		fp.Allow, fp.Deny = config.ParseEgress(f.Egress)
		p.Functions[f.Name] = fp
	}
	return p
}

// chainOf names a function's egress chain.
func chainOf(function string) string { return "fn-" + function }

// tableNames are jobgate's nftables tables for a bridge: one in the inet
// family (host, egress, NAT) and one in the bridge family (job to job on
// the bridge, which never reaches the inet hooks).
func tableName(bridge string) string {
	if bridge == "jobgate0" {
		return "jobgate"
	}
	return "jobgate-" + bridge
}

// ruleset is the whole of jobgate's tables for one bridge as an nft
// script, deleting and re-making them in one transaction (nft -f is
// atomic: no moment without rules). members are the namespaces in use
// or ready, whose per-job elements it keeps.
func ruleset(bridge string, subnet netip.Prefix, dns []netip.Addr, p Policy, members []*Namespace, exists [2]bool) string {
	t := tableName(bridge)
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	if exists[0] {
		w("delete table inet %s", t)
	}
	if exists[1] {
		w("delete table bridge %s", t)
	}
	br := quote(bridge)
	w("table inet %s {", t)
	// jobs maps a job's address to its function's chain.
	w("\tmap jobs {\n\t\ttype ipv4_addr : verdict")
	var elems []string
	for _, ns := range members {
		if _, ok := p.Functions[ns.Function]; ok && ns.Function != "" {
			elems = append(elems, fmt.Sprintf("%s : jump %s", ns.IP, chainOf(ns.Function)))
		}
	}
	if len(elems) > 0 {
		w("\t\telements = { %s }", strings.Join(elems, ", "))
	}
	w("\t}")
	// The host itself: nothing but replies and the DNS servers on it.
	w("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;")
	w("\t\tiifname %s ct state established,related accept", br)
	for _, d := range dns {
		w("\t\tiifname %s ip daddr %s meta l4proto { tcp, udp } th dport 53 accept", br, d)
	}
	w("\t\tiifname %s drop", br)
	w("\t}")
	w("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;")
	w("\t\tiifname %s jump egress", br)
	// Nothing from outside opens a connection to a job.
	w("\t\toifname %s ct state established,related accept", br)
	w("\t\toifname %s drop", br)
	w("\t}")
	// egress: function deny > function allow > DNS > worker allow >
	// worker deny > default deny > accept.
	w("\tchain egress {")
	w("\t\tct state established,related accept")
	w("\t\tmeta nfproto ipv6 drop")
	w("\t\tip saddr != %s drop", subnet)
	w("\t\tip saddr vmap @jobs")
	for _, d := range dns {
		w("\t\tip daddr %s meta l4proto { tcp, udp } th dport 53 accept", d)
	}
	writeAllow(w, p.Allow)
	for _, r := range p.Deny {
		w("\t\tip daddr %s drop", r.Net)
	}
	for _, r := range DefaultDeny {
		w("\t\tip daddr %s drop", r)
	}
	w("\t\tip daddr %s drop", subnet)
	w("\t\taccept")
	w("\t}")
	names := make([]string, 0, len(p.Functions))
	for n := range p.Functions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fp := p.Functions[n]
		w("\tchain %s {", chainOf(n))
		for _, r := range fp.Deny {
			w("\t\tip daddr %s drop", r.Net)
		}
		writeAllow(w, fp.Allow)
		w("\t}")
	}
	w("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;")
	w("\t\tip saddr %s ip daddr != %s masquerade", subnet, subnet)
	w("\t}")
	w("}")
	// Frames between two ports of the bridge (job to job) are bridged,
	// not routed: only the bridge family sees them.
	w("table bridge %s {", t)
	w("\tset ports {\n\t\ttype ifname")
	var ports []string
	for _, ns := range members {
		if ns.HostVeth != "" {
			ports = append(ports, quote(ns.HostVeth))
		}
	}
	if len(ports) > 0 {
		w("\t\telements = { %s }", strings.Join(ports, ", "))
	}
	w("\t}")
	w("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;")
	w("\t\tiifname @ports drop")
	w("\t}")
	w("}")
	return b.String()
}

func writeAllow(w func(string, ...any), rules []config.EgressRule) {
	for _, r := range rules {
		if r.Port == 0 {
			w("\t\tip daddr %s accept", r.Net)
		} else {
			w("\t\tip daddr %s meta l4proto { tcp, udp } th dport %d accept", r.Net, r.Port)
		}
	}
}

func quote(s string) string { return `"` + s + `"` }
