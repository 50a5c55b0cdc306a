package worker_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/worker"
)

// bridgeStack starts a stack whose functions run on a bridge network of
// the test's own, resolving through the fake host's DNS server.
func bridgeStack(t *testing.T, fake *testenv.FakeHost, egress config.Egress, fns ...config.Function) *testenv.Stack {
	t.Helper()
	s := testenv.Shared(t)
	for i := range fns {
		if fns[i].Network == "" {
			fns[i].Network = config.NetworkBridge
		}
		fns[i].Retry = noRetry
	}
	cfg := s.Config(t, testenv.Redis(t), fns...)
	cfg.Worker.Network = testenv.JobNetwork(t, fake.Addr)
	cfg.Worker.Network.Egress = egress
	return testenv.StartStackWith(t, s, cfg, node.Options{})
}

// outputOf runs fn with event and returns its stdout, failing unless it
// finished.
func outputOf(t *testing.T, st *testenv.Stack, fn, event string) []string {
	t.Helper()
	end := run(t, st, fn, []byte(event))
	out := st.Stdout(t, end.RequestId)
	if end.Status != record.Finished {
		t.Fatalf("%s: %s %d %s\n%s", fn, end.Status, end.StatusCode, end.Message, strings.Join(out, "\n"))
	}
	return out
}

func has(out []string, prefix string) bool {
	for _, l := range out {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// hostAddr is this machine's address on its default route's interface.
func hostAddr(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/net/route")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 2 && fs[1] == "00000000" {
			ifc, err := net.InterfaceByName(fs[0])
			if err != nil {
				t.Fatal(err)
			}
			as, _ := ifc.Addrs()
			for _, a := range as {
				if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
					return n.IP.String()
				}
			}
		}
	}
	t.Fatal("no default route: cannot tell this host's address")
	return ""
}

// TestBridgeNetwork: a job on the bridge reaches the (fake) internet by
// name and by address, and cannot reach the host on any of its
// addresses, the metadata endpoint or another job; network: none has
// only lo. Afterwards nothing of the jobs' networks is left.
func TestBridgeNetwork(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	fake := testenv.FakeInternet(t, true)
	// A listener on all of this host's addresses.
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	host := hostAddr(t)
	for _, a := range []string{host, fake.Gateway} {
		// It is reachable, just not from a job.
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", a, port), 2*time.Second)
		if err != nil {
			t.Fatalf("the host's own listener on %s: %v", a, err)
		}
		c.Close()
	}
	if c, err := net.DialTimeout("tcp", fake.Metadata+":80", 2*time.Second); err != nil {
		t.Fatalf("the fake metadata endpoint from the host: %v", err)
	} else {
		c.Close()
	}

	st := bridgeStack(t, fake, config.Egress{},
		config.Function{Name: "probe", Image: img, Args: []string{"addrs", "cat", "/etc/resolv.conf", "cat", "/etc/hosts",
			"get", "http://" + fake.Name + "/", "get", "http://" + fake.Addr + "/"}},
		config.Function{Name: "reach", Image: img, Args: []string{"dial", "event"}},
		config.Function{Name: "server", Image: img, Args: []string{"addrs", "listen", "8080", "sleep", "60s"}, TimeoutS: 120},
		config.Function{Name: "isolated", Image: img, Args: []string{"netifs"}, Network: config.NetworkNone},
		config.Function{Name: "warmnet", Image: img, Args: []string{"addrs", "get", "http://" + fake.Name + "/"}, Provisioned: 1},
	)
	subnet := netip.MustParsePrefix(st.Config.Worker.Network.Subnet)
	bridgeGateway := subnet.Addr().Next().String()

	out := outputOf(t, st, "probe", `{}`)
	var jobAddr string
	for _, l := range out {
		if a, ok := strings.CutPrefix(l, "addr "); ok {
			jobAddr = a
		}
	}
	if a, err := netip.ParseAddr(jobAddr); err != nil || !subnet.Contains(a) {
		t.Fatalf("job address %q not in %s:\n%s", jobAddr, subnet, strings.Join(out, "\n"))
	}
	for _, want := range []string{"nameserver " + fake.Addr, jobAddr + "\tjobgate", "get 200 fake-internet " + fake.Addr} {
		if !has(out, want) {
			t.Errorf("probe output lacks %q:\n%s", want, strings.Join(out, "\n"))
		}
	}
	if n := strings.Count(strings.Join(out, "\n"), "get 200 fake-internet"); n != 2 {
		t.Errorf("fetched the fake host %d times of 2 (by name and by address):\n%s", n, strings.Join(out, "\n"))
	}

	refused := map[string]string{
		"the host's address":        fmt.Sprintf("%s:%d", host, port),
		"the bridge gateway":        fmt.Sprintf("%s:%d", bridgeGateway, port),
		"the host on the fake link": fmt.Sprintf("%s:%d", fake.Gateway, port),
		"the metadata endpoint":     fake.Metadata + ":80",
	}
	for what, addr := range refused {
		if out := outputOf(t, st, "reach", fmt.Sprintf(`{"addr":%q}`, addr)); !has(out, "dial error") {
			t.Errorf("a job reached %s (%s):\n%s", what, addr, strings.Join(out, "\n"))
		}
	}
	if out := outputOf(t, st, "reach", fmt.Sprintf(`{"addr":"%s:80"}`, fake.Addr)); !has(out, "dial ok") {
		t.Errorf("a job could not reach the fake internet host:\n%s", strings.Join(out, "\n"))
	}

	// Another job: listening, reachable from the host, not from a job.
	srv := st.Invoke(t, "server", "?wait=none", []byte(`{}`), 202)
	var srvAddr string
	testenv.Eventually(t, 60*time.Second, "the server job to listen", func() bool {
		for _, l := range st.Stdout(t, srv.RequestId) {
			if a, ok := strings.CutPrefix(l, "addr "); ok {
				srvAddr = a
			}
			if strings.HasPrefix(l, "listening") && srvAddr != "" {
				return true
			}
		}
		return false
	})
	target := srvAddr + ":8080"
	if c, err := net.DialTimeout("tcp", target, 2*time.Second); err != nil {
		t.Fatalf("the server job from the host: %v", err)
	} else {
		c.Close()
	}
	if out := outputOf(t, st, "reach", fmt.Sprintf(`{"addr":%q}`, target)); !has(out, "dial error") {
		t.Errorf("a job reached another job at %s:\n%s", target, strings.Join(out, "\n"))
	}
	code, body := st.Do(t, "POST", "/v1/invocations/"+srv.RequestId+"/terminate", []byte(`{"GraceShutdown":false}`), nil)
	if code != 200 && code != 202 {
		t.Fatalf("terminate: %d %s", code, body)
	}
	st.WaitEnd(t, srv.RequestId, 30*time.Second)

	// A provisioned (warm) instance has the same network.
	waitPool(t, st.Node.Worker, "warmnet", 1)
	if out := outputOf(t, st, "warmnet", `{}`); !has(out, "addr 10.91.") || !has(out, "get 200 fake-internet "+fake.Addr) {
		t.Errorf("a provisioned instance's network:\n%s", strings.Join(out, "\n"))
	}

	out = outputOf(t, st, "isolated", `{}`)
	if len(out) != 1 || out[0] != "if lo" {
		t.Errorf("network: none has %v, want only lo", out)
	}
	assertNoJobNetworks(t, st.Node.Worker)
}

// assertNoJobNetworks waits until every namespace the manager holds is
// either ready or named by a live container (a provisioned instance's):
// no ended job's namespace, lease or policy element is left.
func assertNoJobNetworks(t *testing.T, w *worker.Worker) {
	t.Helper()
	m := w.Network()
	testenv.EventuallyNoError(t, 30*time.Second, "the jobs' networks to be released", func() error {
		inUse, err := w.Runtime().NetworksInUse(t.Context())
		if err != nil {
			return err
		}
		c, err := m.Count()
		if err != nil {
			return err
		}
		ready := m.Ready()
		held := ready + len(inUse)
		if c.Namespaces != held || c.Leases != held || c.Ports != held || c.Jobs != len(inUse) {
			return fmt.Errorf("%+v with %d ready and %d in use by containers", c, ready, len(inUse))
		}
		return nil
	})
}

// TestEgressPolicy: the worker denies 198.18.0.0/15; a function that
// allows the fake host's /32 reaches it and nothing else of the range;
// one that does not, reaches neither. DNS to the configured server passes
// whatever its range.
func TestEgressPolicy(t *testing.T) {
	t.Parallel()
	img := jobImage(t)
	fake := testenv.FakeInternet(t, false)
	st := bridgeStack(t, fake, config.Egress{Deny: []string{"198.18.0.0/15"}},
		config.Function{Name: "allowed", Image: img, Args: []string{"get", "http://" + fake.Name + "/", "dial", fake.Other + ":80"},
			Egress: &config.Egress{Allow: []string{fake.Addr + "/32"}}},
		config.Function{Name: "denied", Image: img, Args: []string{"get", "http://" + fake.Addr + "/"}},
		config.Function{Name: "port", Image: img, Args: []string{"dial", fake.Addr + ":80", "dial", fake.Addr + ":81"},
			Egress: &config.Egress{Allow: []string{fake.Addr + ":80"}}},
		config.Function{Name: "selfdeny", Image: img, Args: []string{"get", "http://" + fake.Addr + "/"},
			Egress: &config.Egress{Allow: []string{fake.Addr}, Deny: []string{fake.Addr}}},
	)
	out := outputOf(t, st, "allowed", `{}`)
	if !has(out, "get 200 fake-internet "+fake.Addr) || !has(out, "dial error") {
		t.Errorf("allowed: want the /32 reached by name and %s refused:\n%s", fake.Other, strings.Join(out, "\n"))
	}
	if out := outputOf(t, st, "denied", `{}`); !has(out, "get error") {
		t.Errorf("denied: reached a worker-denied address:\n%s", strings.Join(out, "\n"))
	}
	out = outputOf(t, st, "port", `{}`)
	if len(out) != 2 || out[0] != "dial ok" || !strings.HasPrefix(out[1], "dial error") || strings.Contains(out[1], "refused") {
		t.Errorf("port: want :80 allowed and :81 dropped (not refused by the host):\n%s", strings.Join(out, "\n"))
	}
	if out := outputOf(t, st, "selfdeny", `{}`); !has(out, "get error") {
		t.Errorf("a function's deny must win over its allow:\n%s", strings.Join(out, "\n"))
	}
	rules := nftList(t, st.Node.Worker.Network().Table())
	for _, want := range []string{"ip daddr 198.18.0.0/15 drop", "chain fn-allowed", "masquerade", "iifname @ports drop"} {
		if !strings.Contains(rules, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rules)
		}
	}
	assertNoJobNetworks(t, st.Node.Worker)
}

func nftList(t *testing.T, table string) string {
	t.Helper()
	var b strings.Builder
	for _, fam := range []string{"inet", "bridge"} {
		out, err := exec.Command("nft", "list", "table", fam, table).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table %s %s: %v: %s", fam, table, err, out)
		}
		b.Write(out)
	}
	return b.String()
}
