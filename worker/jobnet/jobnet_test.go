package jobnet_test

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/worker/jobnet"
)

// TestManagerLifecycle: on the real CNI plugins and nftables, a ready
// namespace is made ahead, an attached one is in its function's policy,
// and nothing is left once it is detached and the manager stopped.
func TestManagerLifecycle(t *testing.T) {
	t.Parallel()
	n := testenv.JobNetwork(t, "198.18.255.2")
	ctx := context.Background()
	allow, _ := config.ParseEgressRule("198.18.255.2:80", true)
	m, err := jobnet.New(ctx, jobnet.Options{
		Bridge: n.Bridge, Subnet: netip.MustParsePrefix(n.Subnet), DNS: []netip.Addr{netip.MustParseAddr("198.18.255.2")},
		PluginDirs: n.PluginDirs, StateDir: t.TempDir(), Ready: 1,
		Policy: jobnet.Policy{Functions: map[string]jobnet.FunctionPolicy{"f": {Allow: []config.EgressRule{allow}}}},
		Logger: testenv.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(ctx)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = m.Stop(ctx)
		}
	})
	count := func(want jobnet.Counts) {
		t.Helper()
		testenv.EventuallyNoError(t, 30*time.Second, fmt.Sprintf("counts %+v", want), func() error {
			c, err := m.Count()
			if err == nil && c != want {
				err = fmt.Errorf("counts %+v", c)
			}
			return err
		})
	}
	count(jobnet.Counts{Namespaces: 1, Leases: 1, Ports: 1})
	ns, err := m.Attach(ctx, "f", false)
	if err != nil {
		t.Fatal(err)
	}
	count(jobnet.Counts{Namespaces: 2, Leases: 2, Ports: 2, Jobs: 1})
	out, err := exec.Command("nft", "list", "map", "inet", m.Table(), "jobs").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ns.IP.String()+" : jump fn-f") {
		t.Fatalf("jobs map: %v\n%s", err, out)
	}
	if err := m.Detach(ctx, ns.ID); err != nil {
		t.Fatal(err)
	}
	count(jobnet.Counts{Namespaces: 1, Leases: 1, Ports: 1})
	// A recyclable one goes back to the ready ones, out of the policy.
	ns, err = m.Attach(ctx, "f", true)
	if err != nil {
		t.Fatal(err)
	}
	count(jobnet.Counts{Namespaces: 2, Leases: 2, Ports: 2, Jobs: 1})
	if err := m.Detach(ctx, ns.ID); err != nil {
		t.Fatal(err)
	}
	if c, err := m.Count(); err != nil || c != (jobnet.Counts{Namespaces: 2, Leases: 2, Ports: 2}) || m.Ready() != 2 {
		t.Fatalf("after a recyclable detach: %+v %v, %d ready", c, err, m.Ready())
	}
	stopped = true
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := m.Count()
	if err != nil || c != (jobnet.Counts{}) {
		t.Fatalf("after stop: %+v %v", c, err)
	}
}

// Without the CNI plugins a worker refuses to start, naming the package.
func TestMissingPluginsNameThePackage(t *testing.T) {
	t.Parallel()
	_, err := jobnet.New(context.Background(), jobnet.Options{
		Bridge: "jgmissing", Subnet: netip.MustParsePrefix("10.91.255.0/24"), PluginDirs: []string{t.TempDir()}, StateDir: t.TempDir(),
	})
	if err == nil || !strings.Contains(err.Error(), `CNI plugin "bridge"`) || !strings.Contains(err.Error(), "containernetworking-plugins") {
		t.Fatalf("want an error naming the plugin and the package, got %v", err)
	}
}
