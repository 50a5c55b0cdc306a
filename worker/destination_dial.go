package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// errDestinationAddress is a destination whose address is refused: the
// host itself, loopback, link-local or private (SSRF; docs/SECURITY.md).
var errDestinationAddress = errors.New("destination address refused (loopback, link-local, private or this host's; list it in worker.destinations.allow)")

// refusedRanges are what a URL destination may not reach unless
// worker.destinations.allow lists it.
var refusedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("224.0.0.0/3"),
	netip.MustParsePrefix("::/128"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fc00::/7"), netip.MustParsePrefix("ff00::/8"),
}

// destinationAddressOK reports whether a destination may connect to ip:
// allowed by the list, else neither in a refused range nor one of this
// host's own addresses.
func destinationAddressOK(ip netip.Addr, allow []netip.Prefix, hostAddrs func() []netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range allow {
		if p.Contains(ip) {
			return true
		}
	}
	for _, p := range refusedRanges {
		if p.Contains(ip) {
			return false
		}
	}
	for _, a := range hostAddrs() {
		if a.Unmap() == ip {
			return false
		}
	}
	return true
}

func interfaceAddrs() []netip.Addr {
	as, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip)
			}
		}
	}
	return out
}

// newDestinationClient is the HTTP client of URL destinations: it follows
// no redirect (a 3xx is a failed delivery, as Stripe treats it) and
// checks every address it connects to after DNS resolution, so a name
// cannot steer it to the host or a private network.
func newDestinationClient(allow []netip.Prefix) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("destination address %s: %w", address, err)
		}
		if !destinationAddressOK(ap.Addr(), allow, interfaceAddrs) {
			return fmt.Errorf("%s: %w", ap.Addr(), errDestinationAddress)
		}
		return nil
	}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a proxy would connect on our behalf, unchecked
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
