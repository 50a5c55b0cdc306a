// Package jobnet gives `network: bridge` jobs their network: a network
// namespace per job on the worker's bridge through CNI (containerd's
// go-cni with the bridge, host-local and loopback plugins), NAT egress,
// a resolv.conf and hosts file, and the egress policy in the kernel
// (nftables tables of jobgate's own; see rules.go). Namespaces are made
// ahead of need (Options.Ready) so that a start only takes one and adds
// its address to the policy map; everything a job had is released on
// Detach, and Sweep releases what a killed worker left.
package jobnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/pkg/netns"
	gocni "github.com/containerd/go-cni"
	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/rs/zerolog"
)

// Options configure a Manager.
type Options struct {
	Bridge     string
	Subnet     netip.Prefix
	DNS        []netip.Addr // empty: the host's (see newResolvConf)
	PluginDirs []string
	StateDir   string // the worker's network state: namespaces, files, leases
	Ready      int    // namespaces kept made ahead of need
	Hostname   string // the jobs' hostname, named in their /etc/hosts
	Policy     Policy
	Logger     zerolog.Logger
	// ReadFile reads the host's resolv.conf (nil: os.ReadFile).
	ReadFile func(string) ([]byte, error)
}

// Namespace is one job's network.
type Namespace struct {
	ID       string     `json:"id"` // the namespace file's name; CNI's container id
	IP       netip.Addr `json:"ip"`
	HostVeth string     `json:"host_veth"`
	Function string     `json:"function,omitempty"` // "" while ready
	// Recyclable: the job could not change the namespace (no added
	// capabilities), so once its processes are gone it may serve another.
	Recyclable bool   `json:"recyclable,omitempty"`
	Path       string `json:"-"`
	Dir        string `json:"-"` // resolv.conf and hosts
}

// ResolvConf and Hosts are the files mounted read-only in the job.
func (ns *Namespace) ResolvConf() string { return filepath.Join(ns.Dir, "resolv.conf") }

// Hosts is the job's /etc/hosts.
func (ns *Namespace) Hosts() string { return filepath.Join(ns.Dir, "hosts") }

// Manager owns the bridge network of one worker.
type Manager struct {
	opts   Options
	log    zerolog.Logger
	cni    gocni.CNI
	resolv resolvConf
	nsDir  string // bind mounts of the namespaces
	jobDir string // one directory per namespace: meta.json, resolv.conf, hosts
	ipam   string // host-local's leases

	mu     sync.Mutex
	all    map[string]*Namespace // every namespace on disk this process knows
	mine   map[string]bool       // made or attached by this process (never swept)
	ready  []*Namespace
	policy Policy
	nft    *nftables.Conn

	kick    chan struct{}
	running bool // between Start and Stop: ready namespaces are kept
	cancel  context.CancelFunc
	done    chan struct{}
}

// The CNI plugins a bridge network runs.
var requiredPlugins = []string{"bridge", "host-local", "loopback"}

// New checks what the bridge network needs (the CNI plugins, nftables)
// and installs jobgate's tables, keeping the namespaces a previous
// process left (their jobs may still run; Sweep decides).
func New(ctx context.Context, o Options) (*Manager, error) {
	if o.ReadFile == nil {
		o.ReadFile = os.ReadFile
	}
	if o.Hostname == "" {
		o.Hostname = "jobgate"
	}
	for _, p := range requiredPlugins {
		if findPlugin(o.PluginDirs, p) == "" {
			return nil, fmt.Errorf("network: bridge needs the CNI plugin %q, not found in %s: install Debian's containernetworking-plugins (or set worker.network.plugin_dirs)", p, strings.Join(o.PluginDirs, ", "))
		}
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("network: bridge needs nftables' nft command: install Debian's nftables: %w", err)
	}
	rc, note, err := newResolvConf(o.DNS, o.ReadFile)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	m := &Manager{
		opts: o, log: o.Logger.With().Str("part", "jobnet").Logger(), resolv: rc,
		nsDir: filepath.Join(o.StateDir, "ns"), jobDir: filepath.Join(o.StateDir, "jobs"), ipam: filepath.Join(o.StateDir, "ipam"),
		all: map[string]*Namespace{}, mine: map[string]bool{}, policy: o.Policy, kick: make(chan struct{}, 1),
	}
	if note != "" {
		m.log.Warn().Msg(note)
	}
	for _, d := range []string{m.nsDir, m.jobDir, m.ipam} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("network state: %w", err)
		}
	}
	// The bridge network first: go-cni names a network's interface by
	// its index (eth0).
	m.cni, err = gocni.New(gocni.WithPluginDir(o.PluginDirs), gocni.WithMinNetworkCount(2),
		gocni.WithConfListBytes(m.confList()), gocni.WithLoNetwork)
	if err != nil {
		return nil, fmt.Errorf("network: CNI config: %w", err)
	}
	if m.nft, err = nftables.New(nftables.AsLasting()); err != nil {
		return nil, fmt.Errorf("network: nftables: %w", err)
	}
	m.load()
	if err := m.apply(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// confList is the CNI network: a bridge whose address is the jobs'
// gateway, host-local addresses, no CNI masquerade (NAT is in jobgate's
// own table, with the rest of the policy).
func (m *Manager) confList() []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "jobgate-" + m.opts.Bridge,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": m.opts.Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": m.opts.Subnet.String()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": m.ipam,
			},
		}},
	}
	b, _ := json.Marshal(conf)
	return b
}

func findPlugin(dirs []string, name string) string {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Table names jobgate's nftables tables (inet and bridge families).
func (m *Manager) Table() string { return tableName(m.opts.Bridge) }

// DNS is the nameservers jobs use.
func (m *Manager) DNS() []netip.Addr { return m.resolv.servers }

// load reads the namespaces a previous process left.
func (m *Manager) load() {
	ents, _ := os.ReadDir(m.jobDir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(m.jobDir, e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		var ns Namespace
		if json.Unmarshal(b, &ns) != nil || ns.ID != e.Name() {
			continue
		}
		ns.Path, ns.Dir = filepath.Join(m.nsDir, ns.ID), filepath.Join(m.jobDir, ns.ID)
		m.all[ns.ID] = &ns
	}
}

// apply installs jobgate's tables anew, atomically, with the elements of
// every namespace known.
func (m *Manager) apply(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	members := make([]*Namespace, 0, len(m.all))
	for _, ns := range m.all {
		members = append(members, ns)
	}
	script := "table inet " + m.Table() + "\ntable bridge " + m.Table() + "\n" +
		ruleset(m.opts.Bridge, m.opts.Subnet, m.resolv.servers, m.policy, members, [2]bool{true, true})
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("network: install nftables rules: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// SetPolicy replaces the egress policy (a config reload).
func (m *Manager) SetPolicy(ctx context.Context, p Policy) error {
	m.mu.Lock()
	m.policy = p
	m.mu.Unlock()
	return m.apply(ctx)
}

// Start keeps Options.Ready namespaces made until Stop.
func (m *Manager) Start(ctx context.Context) {
	ctx, m.cancel = context.WithCancel(ctx)
	m.done = make(chan struct{})
	m.mu.Lock()
	m.running = true
	m.mu.Unlock()
	go m.refill(ctx)
	m.wake()
}

// Stop ends the refill and releases the ready namespaces; namespaces of
// jobs stay (their jobs run on).
func (m *Manager) Stop(ctx context.Context) error {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
	m.mu.Lock()
	ready := m.ready
	m.ready, m.running = nil, false
	m.mu.Unlock()
	var errs []error
	for _, ns := range ready {
		errs = append(errs, m.release(ctx, ns))
	}
	if m.nft != nil {
		_ = m.nft.CloseLasting()
	}
	return errors.Join(errs...)
}

func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) refill(ctx context.Context) {
	defer close(m.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		for {
			m.mu.Lock()
			short := len(m.ready) < m.opts.Ready
			m.mu.Unlock()
			if !short || ctx.Err() != nil {
				break
			}
			ns, err := m.create(ctx)
			if err != nil {
				if ctx.Err() == nil {
					m.log.Warn().Err(err).Msg("make a ready network namespace")
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
				continue
			}
			m.mu.Lock()
			m.ready = append(m.ready, ns)
			m.mu.Unlock()
		}
	}
}

// create makes a namespace: the namespace itself (IPv6 off: jobs have
// IPv4 egress only, and no fe80:: path to the host or each other), its
// CNI attachment, its files and its bridge port's place in the policy.
func (m *Manager) create(ctx context.Context) (_ *Namespace, err error) {
	n, err := netns.NewNetNS(m.nsDir)
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	ns := &Namespace{ID: filepath.Base(n.GetPath()), Path: n.GetPath()}
	ns.Dir = filepath.Join(m.jobDir, ns.ID)
	m.mu.Lock()
	m.all[ns.ID], m.mine[ns.ID] = ns, true
	m.mu.Unlock()
	defer func() {
		if err != nil {
			_ = m.release(context.WithoutCancel(ctx), ns)
		}
	}()
	if err := n.Do(func(cnins.NetNS) error { return disableIPv6() }); err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", ns.ID, err)
	}
	if err := os.MkdirAll(ns.Dir, 0o700); err != nil {
		return nil, err
	}
	res, err := m.cni.Setup(ctx, ns.ID, ns.Path)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: CNI add: %w", ns.ID, err)
	}
	// The job's address is eth0's; the host end of its veth is the
	// bridge plugin's interface outside the namespace that is not the
	// bridge (the loopback network's result has neither).
	if c := res.Interfaces["eth0"]; c != nil && len(c.IPConfigs) > 0 {
		ns.IP, _ = netip.AddrFromSlice(c.IPConfigs[0].IP.To4())
	}
	for _, r := range res.Raw() {
		for _, ifc := range r.Interfaces {
			if ifc.Sandbox == "" && ifc.Name != m.opts.Bridge {
				ns.HostVeth = ifc.Name
			}
		}
	}
	if !ns.IP.IsValid() || ns.HostVeth == "" {
		return nil, fmt.Errorf("network namespace %s: CNI gave no address or host interface", ns.ID)
	}
	if err := os.WriteFile(ns.ResolvConf(), m.resolv.text, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(ns.Hosts(), hostsFile(ns.IP, m.opts.Hostname), 0o644); err != nil {
		return nil, err
	}
	if err := m.writeMeta(ns); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.setPort(ns, true); err != nil {
		return nil, err
	}
	return ns, nil
}

func disableIPv6() error {
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disable IPv6: %w", err)
		}
	}
	return nil
}

func (m *Manager) writeMeta(ns *Namespace) error {
	b, _ := json.Marshal(ns)
	tmp := filepath.Join(ns.Dir, "meta.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(ns.Dir, "meta.json"))
}

// Attach gives a job of function its network: a ready namespace, or a
// new one. Its address is in the function's policy before this returns,
// so the job's first packet is already filtered.
func (m *Manager) Attach(ctx context.Context, function string, recyclable bool) (*Namespace, error) {
	m.mu.Lock()
	var ns *Namespace
	if n := len(m.ready); n > 0 {
		ns, m.ready = m.ready[n-1], m.ready[:n-1]
	}
	m.mu.Unlock()
	m.wake()
	if ns == nil {
		var err error
		if ns, err = m.create(ctx); err != nil {
			return nil, err
		}
	}
	ns.Function, ns.Recyclable = function, recyclable
	err := m.writeMeta(ns)
	if err == nil {
		m.mu.Lock()
		err = m.setJob(ns, true)
		m.mu.Unlock()
	}
	if err != nil {
		_ = m.release(context.WithoutCancel(ctx), ns)
		return nil, fmt.Errorf("attach network %s: %w", ns.ID, err)
	}
	return ns, nil
}

// Detach releases a job's namespace, whose processes are gone: a
// recyclable one goes back to the ready ones (out of its function's
// policy: a start then costs no CNI call at all), others are torn down:
// policy elements, CNI attachment (veth, address lease), the namespace
// and its files. Unknown ids (already released) are not an error.
func (m *Manager) Detach(ctx context.Context, id string) error {
	if id == "" || strings.ContainsAny(id, `/\`) {
		return nil
	}
	m.mu.Lock()
	ns := m.all[id]
	if ns != nil && ns.Recyclable && m.running && len(m.ready) < max(m.opts.Ready, 1)*2 {
		err := m.setJob(ns, false)
		if err == nil {
			ns.Function, ns.Recyclable = "", false
			if err = m.writeMeta(ns); err == nil {
				m.ready = append(m.ready, ns)
				m.mine[ns.ID] = true
				m.mu.Unlock()
				return nil
			}
		}
	}
	m.mu.Unlock()
	if ns == nil {
		if _, err := os.Stat(filepath.Join(m.nsDir, id)); err != nil {
			return nil
		}
		ns = &Namespace{ID: id, Path: filepath.Join(m.nsDir, id), Dir: filepath.Join(m.jobDir, id)}
	}
	return m.release(ctx, ns)
}

// release tears a namespace down; each step tolerates what is already
// gone, so a release cut short can be repeated.
func (m *Manager) release(ctx context.Context, ns *Namespace) error {
	var errs []error
	m.mu.Lock()
	if ns.IP.IsValid() {
		errs = append(errs, m.setJob(ns, false))
	}
	if ns.HostVeth != "" {
		errs = append(errs, m.setPort(ns, false))
	}
	m.mu.Unlock()
	if err := m.cni.Remove(ctx, ns.ID, ns.Path); err != nil {
		errs = append(errs, fmt.Errorf("CNI del %s: %w", ns.ID, err))
	}
	if err := netns.LoadNetNS(ns.Path).Remove(); err != nil {
		errs = append(errs, fmt.Errorf("remove network namespace %s: %w", ns.ID, err))
	}
	if err := os.RemoveAll(ns.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.all, ns.ID)
	delete(m.mine, ns.ID)
	m.mu.Unlock()
	return nil
}

// Sweep releases the namespaces no job uses: left by a killed worker
// (made ready, or of a job whose container is gone). inUse reports the
// namespaces containers still name. Namespaces this process made or
// handed out are never swept (a create in progress has no container
// yet). It also removes address leases whose namespace is gone.
func (m *Manager) Sweep(ctx context.Context, inUse map[string]bool) (released int, _ error) {
	ents, err := os.ReadDir(m.nsDir)
	if err != nil {
		return 0, fmt.Errorf("sweep networks: %w", err)
	}
	var errs []error
	for _, e := range ents {
		id := e.Name()
		m.mu.Lock()
		ns, mine := m.all[id], m.mine[id]
		m.mu.Unlock()
		if mine || inUse[id] {
			continue
		}
		if ns == nil {
			ns = &Namespace{ID: id, Path: filepath.Join(m.nsDir, id), Dir: filepath.Join(m.jobDir, id)}
		}
		if err := m.release(ctx, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		released++
	}
	// Directories and leases of namespaces whose mount is already gone.
	dirs, _ := os.ReadDir(m.jobDir)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(m.nsDir, d.Name())); errors.Is(err, os.ErrNotExist) {
			m.mu.Lock()
			mine := m.mine[d.Name()]
			m.mu.Unlock()
			if !mine {
				_ = os.RemoveAll(filepath.Join(m.jobDir, d.Name()))
			}
		}
	}
	leases, _ := filepath.Glob(filepath.Join(m.ipam, "*", "*.*.*.*"))
	for _, l := range leases {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		owner, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		owner = strings.TrimSpace(owner)
		if _, err := os.Stat(filepath.Join(m.nsDir, owner)); errors.Is(err, os.ErrNotExist) {
			m.mu.Lock()
			mine := m.mine[owner]
			m.mu.Unlock()
			if !mine {
				_ = os.Remove(l)
			}
		}
	}
	return released, errors.Join(errs...)
}

// Counts are what the manager holds on the host (tests count leaks).
type Counts struct {
	Namespaces, Leases, Jobs, Ports int
}

// Count reports the namespaces on disk, address leases and policy
// elements.
func (m *Manager) Count() (Counts, error) {
	var c Counts
	ents, err := os.ReadDir(m.nsDir)
	if err != nil {
		return c, err
	}
	c.Namespaces = len(ents)
	leases, _ := filepath.Glob(filepath.Join(m.ipam, "*", "*.*.*.*"))
	c.Leases = len(leases)
	m.mu.Lock()
	defer m.mu.Unlock()
	jobs, err := m.nft.GetSetElements(m.jobsSet())
	if err != nil {
		return c, fmt.Errorf("list jobs map: %w", err)
	}
	ports, err := m.nft.GetSetElements(m.portsSet())
	if err != nil {
		return c, fmt.Errorf("list ports set: %w", err)
	}
	c.Jobs, c.Ports = len(jobs), len(ports)
	return c, nil
}

// Ready is how many namespaces are made and waiting.
func (m *Manager) Ready() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ready)
}

func (m *Manager) jobsSet() *nftables.Set {
	return &nftables.Set{Table: &nftables.Table{Family: nftables.TableFamilyINet, Name: m.Table()}, Name: "jobs",
		IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
}

func (m *Manager) portsSet() *nftables.Set {
	return &nftables.Set{Table: &nftables.Table{Family: nftables.TableFamilyBridge, Name: m.Table()}, Name: "ports",
		KeyType: nftables.TypeIFName}
}

// setJob adds (or removes) a job's address → its function's chain. A
// function without a chain (it left the config) gets only the worker's
// rules. Call with mu held.
func (m *Manager) setJob(ns *Namespace, add bool) error {
	if _, ok := m.policy.Functions[ns.Function]; !ok || ns.Function == "" {
		return nil
	}
	ip := ns.IP.As4()
	el := nftables.SetElement{Key: ip[:], VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chainOf(ns.Function)}}
	if err := m.setElement(m.jobsSet(), el, add); err != nil {
		return fmt.Errorf("policy element %s → %s: %w", ns.IP, chainOf(ns.Function), err)
	}
	return nil
}

// setPort adds (or removes) a namespace's bridge port to the set whose
// frames may not reach another port. Call with mu held.
func (m *Manager) setPort(ns *Namespace, add bool) error {
	key := make([]byte, 16) // IFNAMSIZ, zero-padded
	copy(key, ns.HostVeth)
	if err := m.setElement(m.portsSet(), nftables.SetElement{Key: key}, add); err != nil {
		return fmt.Errorf("port element %s: %w", ns.HostVeth, err)
	}
	return nil
}

// setElement adds or removes one element in one netlink batch; removing
// one that is gone is not an error (a release may be repeated).
func (m *Manager) setElement(set *nftables.Set, el nftables.SetElement, add bool) error {
	var err error
	if add {
		err = m.nft.SetAddElements(set, []nftables.SetElement{el})
	} else {
		err = m.nft.SetDeleteElements(set, []nftables.SetElement{el})
	}
	if err == nil {
		err = m.nft.Flush()
	}
	if err != nil && !add && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
