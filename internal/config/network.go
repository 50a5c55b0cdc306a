package config

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// EgressRule is one parsed egress entry: a destination range and, for
// an allow entry, an optional port (0: every port).
type EgressRule struct {
	Net  netip.Prefix
	Port uint16
}

func (r EgressRule) String() string {
	if r.Port == 0 {
		return r.Net.String()
	}
	return r.Net.String() + ":" + strconv.Itoa(int(r.Port))
}

// ParseEgressRule reads "CIDR", "ADDR", "CIDR:PORT" or "ADDR:PORT" (the
// port only where withPort). IPv4 only: jobs have no IPv6 egress.
func ParseEgressRule(s string, withPort bool) (EgressRule, error) {
	addr, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 && strings.Count(s, ":") == 1 {
		addr, port = s[:i], s[i+1:]
	} else if strings.Contains(s, ":") {
		return EgressRule{}, fmt.Errorf("%q: IPv6 destinations are not supported (jobs have IPv4 egress only)", s)
	}
	var r EgressRule
	if port != "" {
		if !withPort {
			return EgressRule{}, fmt.Errorf("%q: a deny entry takes no port", s)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return EgressRule{}, fmt.Errorf("%q: port must be 1..65535", s)
		}
		r.Port = uint16(n)
	}
	if strings.Contains(addr, "/") {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return EgressRule{}, fmt.Errorf("%q: not a CIDR: %v", s, err)
		}
		r.Net = p.Masked()
	} else {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return EgressRule{}, fmt.Errorf("%q: not an address or CIDR", s)
		}
		r.Net = netip.PrefixFrom(a, a.BitLen())
	}
	if !r.Net.Addr().Is4() {
		return EgressRule{}, fmt.Errorf("%q: IPv6 destinations are not supported (jobs have IPv4 egress only)", s)
	}
	return r, nil
}

// ParseEgress parses both lists (validated configs only: errors are
// skipped here and reported by validate).
func ParseEgress(e *Egress) (allow, deny []EgressRule) {
	if e == nil {
		return nil, nil
	}
	for _, s := range e.Allow {
		if r, err := ParseEgressRule(s, true); err == nil {
			allow = append(allow, r)
		}
	}
	for _, s := range e.Deny {
		if r, err := ParseEgressRule(s, false); err == nil {
			deny = append(deny, r)
		}
	}
	return allow, deny
}

// UsesBridge reports whether any function runs with network: bridge.
func (c *Config) UsesBridge() bool {
	for _, f := range c.Functions {
		if f.Network == NetworkBridge {
			return true
		}
	}
	return false
}

// validateNetwork checks worker.network and each function's network and
// egress (what a schema cannot: CIDRs, ports, modes that take no egress).
func (c *Config) validateNetwork(add func(path, format string, args ...any)) {
	n := c.Worker.Network
	if p, err := netip.ParsePrefix(n.Subnet); err != nil || !p.Addr().Is4() {
		add("worker.network.subnet", "not an IPv4 CIDR: %q", n.Subnet)
	} else if p.Bits() > 28 {
		add("worker.network.subnet", "%s is too small for jobs (at most /28)", n.Subnet)
	}
	for i, d := range n.DNS {
		if a, err := netip.ParseAddr(d); err != nil || !a.Is4() {
			add(fmt.Sprintf("worker.network.dns[%d]", i), "not an IPv4 address: %q", d)
		}
	}
	checkEgress("worker.network.egress", &n.Egress, add)
	for i, a := range c.Worker.Destinations.Allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			add(fmt.Sprintf("worker.destinations.allow[%d]", i), "not a CIDR: %q", a)
		}
	}
	for i, f := range c.Functions {
		p := fmt.Sprintf("functions[%d]", i)
		if f.Egress != nil && f.Network != NetworkBridge {
			add(p+".egress", "applies only to network: bridge (this function has network: %s)", f.Network)
			continue
		}
		checkEgress(p+".egress", f.Egress, add)
	}
}

func checkEgress(path string, e *Egress, add func(path, format string, args ...any)) {
	if e == nil {
		return
	}
	for j, s := range e.Allow {
		if _, err := ParseEgressRule(s, true); err != nil {
			add(fmt.Sprintf("%s.allow[%d]", path, j), "%v", err)
		}
	}
	for j, s := range e.Deny {
		if _, err := ParseEgressRule(s, false); err != nil {
			add(fmt.Sprintf("%s.deny[%d]", path, j), "%v", err)
		}
	}
}

// Warnings are what a valid config does that its author should know.
func (c *Config) Warnings() []Problem {
	var out []Problem
	for i, f := range c.Functions {
		if f.Network == NetworkHost {
			out = append(out, Problem{Path: fmt.Sprintf("functions[%d].network", i),
				Message: fmt.Sprintf("function %q uses the host's network: its jobs reach every service listening on this host, loopback included (Redis, the gateway, the registry, containerd's peers), and no egress policy applies", f.Name)})
		}
	}
	return out
}

// checkSubnetRoutes reports a bridge subnet that overlaps a route of this
// host other than the bridge's own: jobs would shadow (or be shadowed by)
// a network the host reaches.
func (c *Config) checkSubnetRoutes(add func(path, format string, args ...any), routeTable string) {
	if !c.UsesBridge() {
		return
	}
	subnet, err := netip.ParsePrefix(c.Worker.Network.Subnet)
	if err != nil {
		return
	}
	routes, err := hostRoutes(routeTable)
	if err != nil {
		return // not Linux, or no procfs: serve's own setup says more
	}
	for _, r := range routes {
		if r.dev == c.Worker.Network.Bridge || r.dst.Bits() == 0 {
			continue
		}
		if r.dst.Overlaps(subnet.Masked()) {
			add("worker.network.subnet", "%s overlaps this host's route to %s (dev %s): choose another range", subnet, r.dst, r.dev)
		}
	}
}

type route struct {
	dev string
	dst netip.Prefix
}

// hostRoutes reads the IPv4 routing table (/proc/net/route: hex, host
// byte order).
func hostRoutes(path string) ([]route, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []route
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(fs[1])
		mask, err2 := hex.DecodeString(fs[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		a := binary.LittleEndian.Uint32(dst)
		m := binary.LittleEndian.Uint32(mask)
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], a)
		out = append(out, route{dev: fs[0], dst: netip.PrefixFrom(netip.AddrFrom4(b), bits.OnesCount32(m))})
	}
	return out, sc.Err()
}

// DestinationAllow is worker.destinations.allow parsed (validated configs).
func (w *Worker) DestinationAllow() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range w.Destinations.Allow {
		if p, err := netip.ParsePrefix(a); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}
