package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"

	"github.com/jobgate/jobgate/internal/config"
)

// netSlots is where tests claim numbered network slots (a bridge subnet,
// a fake host's /24), across the test binaries running at once: a file
// per slot holding its owner's pid, reclaimed when that process is gone.
const netSlots = "/run/jobgate-test-nets"

// claimSlot takes the lowest free slot of kind in [0, n) until t ends.
func claimSlot(t testing.TB, kind string, n int) int {
	t.Helper()
	if err := os.MkdirAll(netSlots, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		path := filepath.Join(netSlots, fmt.Sprintf("%s-%d", kind, i))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			b, _ := os.ReadFile(path)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				continue
			}
			_ = os.Remove(path) // its owner died: take it over
			if f, err = os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err != nil {
				continue
			}
		} else if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(f, os.Getpid())
		f.Close()
		t.Cleanup(func() { os.Remove(path) })
		return i
	}
	t.Fatalf("no free %s slot of %d", kind, n)
	return 0
}

// JobNetwork is a bridge network of a test's own: a bridge name and a
// /24 of 10.91.0.0/16 no other test uses at the same time, and dns as
// the jobs' nameservers (tests never let a job query the host's).
func JobNetwork(t testing.TB, dns ...string) config.Network {
	t.Helper()
	i := claimSlot(t, "bridge", 256)
	ready := 1
	bridge := fmt.Sprintf("jgt%d", i)
	// A worker leaves its bridge and tables when it stops (its jobs may
	// outlive it); a test's go with the test. Registered before the
	// worker's own cleanup, so it runs after it.
	clear := func() {
		for _, fam := range []string{"inet", "bridge"} {
			_ = exec.Command("nft", "delete", "table", fam, "jobgate-"+bridge).Run()
		}
		_ = exec.Command("ip", "link", "del", bridge).Run()
	}
	clear() // a crashed run's
	t.Cleanup(clear)
	return config.Network{
		Bridge: bridge, Subnet: fmt.Sprintf("10.91.%d.0/24", i), DNS: dns,
		PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"}, Ready: &ready,
	}
}

// FakeHost is a host of the test's own standing in for the internet: a
// network namespace joined to this machine by a veth pair, with
// addresses in 198.18.0.0/15 (the benchmarking range: nothing leaves the
// machine), an HTTP server on port 80 of every address and a DNS server
// on Addr:53 that resolves Name to Addr.
type FakeHost struct {
	Addr    string // the fake host: HTTP and DNS
	Other   string // a second address of it, for deny rules
	Gateway string // this machine's end of the veth
	Subnet  string // the /24 both ends are in
	Name    string // resolves to Addr through the fake DNS server
	// Metadata, when asked for, is 169.254.169.254 on the fake host,
	// routed from this machine: what a cloud metadata endpoint looks like.
	Metadata string
}

// FakeInternet makes a FakeHost for t, removed when t ends. With
// metadata the host also answers on 169.254.169.254 (one test at a time
// can have it: the route is the machine's).
func FakeInternet(t testing.TB, metadata bool) *FakeHost {
	t.Helper()
	i := claimSlot(t, "fake", 200)
	netns := fmt.Sprintf("jgfake%d", i)
	hostIf := fmt.Sprintf("jgfh%d", i)
	h := &FakeHost{
		Addr: fmt.Sprintf("198.18.%d.2", i), Other: fmt.Sprintf("198.18.%d.3", i), Gateway: fmt.Sprintf("198.18.%d.1", i),
		Subnet: fmt.Sprintf("198.18.%d.0/24", i), Name: "fake.test",
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", netns).Run() // a crashed run's
	_ = exec.Command("ip", "link", "del", hostIf).Run()
	ip("netns", "add", netns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", netns).Run()
	})
	ip("link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", netns)
	ip("addr", "add", h.Gateway+"/24", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", netns, "addr", "add", h.Addr+"/24", "dev", "eth0")
	ip("-n", netns, "addr", "add", h.Other+"/24", "dev", "eth0")
	ip("-n", netns, "link", "set", "eth0", "up")
	ip("-n", netns, "link", "set", "lo", "up")
	ip("-n", netns, "route", "add", "default", "via", h.Gateway)
	if metadata {
		h.Metadata = "169.254.169.254"
		ip("-n", netns, "addr", "add", h.Metadata+"/32", "dev", "lo")
		_ = exec.Command("ip", "route", "del", h.Metadata+"/32").Run()
		ip("route", "add", h.Metadata+"/32", "via", h.Addr, "dev", hostIf)
		t.Cleanup(func() { _ = exec.Command("ip", "route", "del", h.Metadata+"/32").Run() })
	}
	// Sockets belong to the namespace they are made in: make them there,
	// serve them from here.
	var web net.Listener
	var dnsUDP net.PacketConn
	var dnsTCP net.Listener
	err := cnins.WithNetNSPath("/var/run/netns/"+netns, func(cnins.NetNS) error {
		var err error
		if web, err = net.Listen("tcp", "0.0.0.0:80"); err != nil {
			return err
		}
		if dnsUDP, err = net.ListenPacket("udp", h.Addr+":53"); err != nil {
			return err
		}
		dnsTCP, err = net.Listen("tcp", h.Addr+":53")
		return err
	})
	if err != nil {
		t.Fatalf("fake host servers: %v", err)
	}
	websrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		fmt.Fprintf(w, "fake-internet %s\n", strings.Split(local.String(), ":")[0])
	})}
	go websrv.Serve(web)
	answer := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA && strings.EqualFold(qq.Name, h.Name+".") {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(h.Addr)})
			}
		}
		if len(m.Answer) == 0 && len(q.Question) > 0 && q.Question[0].Qtype == dns.TypeA {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: dnsUDP, Handler: answer}
	tcp := &dns.Server{Listener: dnsTCP, Handler: answer}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() {
		websrv.Close()
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
	return h
}
