package worker

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/worker/jobnet"
	"github.com/jobgate/jobgate/worker/runtime"
)

// newNetwork sets up the bridge network when a function uses it; nil
// when none does (a reload that adds one needs a restart).
func newNetwork(ctx context.Context, cfg *config.Config, d Deps) (*jobnet.Manager, error) {
	if !cfg.UsesBridge() {
		return nil, nil
	}
	n := cfg.Worker.Network
	subnet, err := netip.ParsePrefix(n.Subnet)
	if err != nil {
		return nil, fmt.Errorf("worker.network.subnet: %w", err)
	}
	var dns []netip.Addr
	for _, s := range n.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("worker.network.dns: %w", err)
		}
		dns = append(dns, a)
	}
	ready := 0
	if n.Ready != nil {
		ready = *n.Ready
	}
	return jobnet.New(ctx, jobnet.Options{
		Bridge: n.Bridge, Subnet: subnet.Masked(), DNS: dns, PluginDirs: n.PluginDirs,
		StateDir: filepath.Join(cfg.Worker.StateDir, "net"), Ready: ready, Hostname: jobHostname,
		Policy: jobnet.PolicyOf(cfg), Logger: d.Logger,
	})
}

// jobHostname is every job's hostname (runtime.Create sets it).
const jobHostname = "jobgate"

// bridgeNetwork adapts jobnet to the runtime's Network seam.
type bridgeNetwork struct{ m *jobnet.Manager }

var _ runtime.Network = bridgeNetwork{}

func (b bridgeNetwork) Attach(ctx context.Context, function string, recyclable bool) (runtime.NetNS, error) {
	ns, err := b.m.Attach(ctx, function, recyclable)
	if err != nil {
		return runtime.NetNS{}, err
	}
	return runtime.NetNS{ID: ns.ID, Path: ns.Path, ResolvConf: ns.ResolvConf(), Hosts: ns.Hosts()}, nil
}

func (b bridgeNetwork) Detach(ctx context.Context, id string) error { return b.m.Detach(ctx, id) }

// sweepNetworks releases the namespaces no container of this worker
// names (left by a killed worker).
func (w *Worker) sweepNetworks(ctx context.Context) {
	if w.net == nil {
		return
	}
	inUse, err := w.rt.NetworksInUse(ctx)
	if err != nil {
		w.log.Warn().Err(err).Msg("list networks in use")
		return
	}
	n, err := w.net.Sweep(ctx, inUse)
	if err != nil {
		w.log.Warn().Err(err).Msg("sweep leftover networks")
	}
	if n > 0 {
		w.log.Info().Int("released", n).Msg("released network namespaces no job uses (left by an earlier process)")
	}
}

// Network is the bridge network manager (nil: no function uses bridge).
func (w *Worker) Network() *jobnet.Manager { return w.net }
