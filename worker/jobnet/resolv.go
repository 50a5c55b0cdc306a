package jobnet

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// Where the host's resolver configuration is read: the usual file and,
// when it names only loopback servers (systemd-resolved's stub), the
// file of the real upstreams.
const (
	hostResolvConf = "/etc/resolv.conf"
	resolvedConf   = "/run/systemd/resolve/resolv.conf"
)

// dockerFallbackDNS is what Docker gives a container when the host has no
// nameserver a container can reach.
var dockerFallbackDNS = []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("8.8.4.4")}

// resolvConf is the content of a job's /etc/resolv.conf and the servers
// it names.
type resolvConf struct {
	servers []netip.Addr
	text    []byte
}

// newResolvConf builds a job's resolv.conf: the configured servers, or
// the host's with loopback servers replaced by their upstreams, as Docker
// does. The host's search and options lines are kept.
func newResolvConf(configured []netip.Addr, readFile func(string) ([]byte, error)) (resolvConf, string, error) {
	var note string
	var servers []netip.Addr
	var rest []string
	host, err := readFile(hostResolvConf)
	if err != nil && len(configured) == 0 {
		return resolvConf{}, "", fmt.Errorf("read %s: %w (set worker.network.dns)", hostResolvConf, err)
	}
	hostServers, hostRest := parseResolv(host)
	rest = hostRest
	switch {
	case len(configured) > 0:
		servers = configured
	default:
		servers = usable(hostServers)
		if len(servers) == 0 {
			if up, err := readFile(resolvedConf); err == nil {
				s, r := parseResolv(up)
				servers, rest = usable(s), r
			}
		}
		if len(servers) == 0 {
			servers = dockerFallbackDNS
			note = fmt.Sprintf("the host names no nameserver a job can reach (only loopback or IPv6 ones in %s): jobs use %v, as Docker's; set worker.network.dns", hostResolvConf, dockerFallbackDNS)
		}
	}
	var b bytes.Buffer
	b.WriteString("# written by jobgate (worker.network.dns)\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	for _, l := range rest {
		b.WriteString(l + "\n")
	}
	return resolvConf{servers: servers, text: b.Bytes()}, note, nil
}

// parseResolv splits a resolv.conf into its nameservers and its search
// and options lines.
func parseResolv(b []byte) (servers []netip.Addr, rest []string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil {
				servers = append(servers, a)
			}
		case "search", "domain", "options":
			rest = append(rest, strings.Join(f, " "))
		}
	}
	return servers, rest
}

// usable drops what a job cannot reach: loopback (its own) and IPv6.
func usable(in []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range in {
		if a.Is4() && !a.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

// hostsFile is a job's /etc/hosts: localhost and its own name.
func hostsFile(ip netip.Addr, hostname string) []byte {
	return fmt.Appendf(nil, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", ip, hostname)
}
