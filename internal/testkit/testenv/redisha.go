package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinelGroup monitor.
const SentinelMaster = "jobgate"

// SentinelGroup is a private Redis master, its replica and three
// sentinels (quorum 2), from Debian's redis-server.
type SentinelGroup struct {
	Nodes     []*RedisServer // [0] the first master, [1] its replica
	Sentinels []*RedisServer
}

// StartSentinelGroup starts a master, a replica and three sentinels that
// declare the master down after 3 s, all stopped at t's cleanup. The data
// nodes keep an append-only file (fsync every second, Redis's default),
// so a restarted node comes back with its data. (With 1 s and no
// persistence, a master busy feeding a restarted, empty replica's full
// sync on a loaded box was taken for down and the empty replica
// promoted: see docs/SCALING.md.)
func StartSentinelGroup(t testing.TB) *SentinelGroup {
	t.Helper()
	g := &SentinelGroup{}
	for i := 0; i < 2; i++ {
		port := FreePort(t)
		args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", t.TempDir(),
			"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--daemonize", "no"}
		if i > 0 {
			args = append(args, "--replicaof", "127.0.0.1", strings.Split(g.Nodes[0].Addr, ":")[1])
		}
		g.Nodes = append(g.Nodes, startServer(t, port, args))
	}
	host, port, _ := strings.Cut(g.Nodes[0].Addr, ":")
	for i := 0; i < 3; i++ {
		sp := FreePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %[1]d\nbind 127.0.0.1\ndir %[2]s\ndaemonize no\n"+
			"sentinel monitor %[3]s %[4]s %[5]s 2\nsentinel down-after-milliseconds %[3]s 3000\n"+
			"sentinel failover-timeout %[3]s 6000\nsentinel parallel-syncs %[3]s 1\n", sp, dir, SentinelMaster, host, port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		g.Sentinels = append(g.Sentinels, startServer(t, sp, []string{conf, "--sentinel"}))
	}
	ctx := context.Background()
	if err := waitFor(30*time.Second, func() error {
		if err := replicaSynced(ctx, g.Nodes[1].Addr); err != nil {
			return err
		}
		// Every sentinel knows the replica and the other sentinels.
		for _, s := range g.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
			m, err := c.Master(ctx, SentinelMaster).Result()
			c.Close()
			if err != nil {
				return err
			}
			if m["num-other-sentinels"] != "2" || m["num-slaves"] != "1" {
				return fmt.Errorf("sentinel %s: %s other sentinels, %s replicas", s.Addr, m["num-other-sentinels"], m["num-slaves"])
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("sentinel group did not form: %v", err)
	}
	return g
}

func startServer(t testing.TB, port int, args []string) *RedisServer {
	t.Helper()
	srv := &RedisServer{Addr: fmt.Sprintf("127.0.0.1:%d", port), args: args}
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(srv.Kill) })
	return srv
}

// SentinelAddrs are the sentinels' addresses.
func (g *SentinelGroup) SentinelAddrs() []string {
	var out []string
	for _, s := range g.Sentinels {
		out = append(out, s.Addr)
	}
	return out
}

// Master is the master's address as a sentinel reports it.
func (g *SentinelGroup) Master(ctx context.Context) (string, error) {
	var errs []error
	for _, s := range g.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		hp, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		c.Close()
		if err == nil {
			return hp[0] + ":" + hp[1], nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// Failover asks a sentinel to promote the replica (SENTINEL FAILOVER).
func (g *SentinelGroup) Failover(ctx context.Context) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: g.Sentinels[0].Addr})
	defer c.Close()
	return c.Failover(ctx, SentinelMaster).Err()
}

// Node is the data node at addr.
func (g *SentinelGroup) Node(addr string) *RedisServer {
	for _, n := range g.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// replicaSynced reports whether the node at addr is a replica whose link
// to its master is up.
func replicaSynced(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
		return fmt.Errorf("%s is not a synced replica", addr)
	}
	return nil
}

// WaitSynced waits until the node that is not the master is a synced
// replica again (after a failover, the old master rejoins as one).
func (g *SentinelGroup) WaitSynced(t testing.TB, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	if err := waitFor(d, func() error {
		m, err := g.Master(ctx)
		if err != nil {
			return err
		}
		for _, n := range g.Nodes {
			if n.Addr != m {
				if err := replicaSynced(ctx, n.Addr); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("sentinel group: replica not synced: %v", err)
	}
}

// RedisCluster is a private Redis Cluster.
type RedisCluster struct {
	Nodes    []*RedisServer
	replicas int // how many of Nodes are replicas, when all are up
}

// StartRedisCluster starts masters × (1 + replicas) cluster nodes and
// joins them with `redis-cli --cluster create`, stopped at t's cleanup.
func StartRedisCluster(t testing.TB, masters, replicas int) *RedisCluster {
	t.Helper()
	cli, err := need("redis-cli")
	if err != nil {
		t.Fatal(err)
	}
	c := &RedisCluster{}
	for i := 0; i < masters*(1+replicas); i++ {
		// The bus port is picked too: its default (port + 10000) could be
		// another test's port or an ephemeral one.
		port, bus := FreePort(t), FreePort(t)
		c.Nodes = append(c.Nodes, startServer(t, port, []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1",
			"--cluster-port", fmt.Sprint(bus),
			"--dir", t.TempDir(), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
			"--maxmemory-policy", "noeviction", "--daemonize", "no"}))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx := context.Background()
	if err := waitFor(30*time.Second, func() error {
		for _, n := range c.Nodes {
			r := redis.NewClient(&redis.Options{Addr: n.Addr})
			info, err := r.ClusterInfo(ctx).Result()
			r.Close()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster not ok", n.Addr)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("redis cluster did not form: %v", err)
	}
	c.replicas = masters * replicas
	c.WaitSynced(t, 30*time.Second)
	return c
}

// WaitSynced waits until the cluster has all its replicas, each synced
// with its master (a WAIT before that counts none).
func (c *RedisCluster) WaitSynced(t testing.TB, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	if err := waitFor(d, func() error {
		synced := 0
		for _, n := range c.Nodes {
			if replicaSynced(ctx, n.Addr) == nil {
				synced++
			}
		}
		if synced < c.replicas {
			return fmt.Errorf("%d of %d replicas synced", synced, c.replicas)
		}
		return nil
	}); err != nil {
		t.Fatalf("redis cluster: %v", err)
	}
}

// Addrs are the nodes' addresses.
func (c *RedisCluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Node is the cluster node at addr.
func (c *RedisCluster) Node(addr string) *RedisServer {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// slotRange is a range of slots and who serves it.
type slotRange struct {
	start, end int
	master     redis.ClusterNode
	replicas   []redis.ClusterNode
}

// slots is the slot map as the first node that answers reports it
// (CLUSTER SHARDS; nodes marked failed left out).
func (c *RedisCluster) slots(ctx context.Context) ([]slotRange, error) {
	var errs []error
	for _, n := range c.Nodes {
		r := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		shards, err := r.ClusterShards(ctx).Result()
		r.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var out []slotRange
		for _, sh := range shards {
			var master redis.ClusterNode
			var replicas []redis.ClusterNode
			for _, nd := range sh.Nodes {
				node := redis.ClusterNode{ID: nd.ID, Addr: fmt.Sprintf("%s:%d", nd.IP, nd.Port)}
				switch {
				case nd.Health != "online":
				case nd.Role == "master":
					master = node
				default:
					replicas = append(replicas, node)
				}
			}
			for _, sr := range sh.Slots {
				out = append(out, slotRange{start: int(sr.Start), end: int(sr.End), master: master, replicas: replicas})
			}
		}
		return out, nil
	}
	return nil, errors.Join(errs...)
}

// keySlot is key's hash slot.
func (c *RedisCluster) keySlot(ctx context.Context, key string) (int, error) {
	var errs []error
	for _, n := range c.Nodes {
		r := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		s, err := r.ClusterKeySlot(ctx, key).Result()
		r.Close()
		if err == nil {
			return int(s), nil
		}
		errs = append(errs, err)
	}
	return 0, errors.Join(errs...)
}

// MasterOf is the node serving key's slot and its replicas (IDs and
// addresses), as the cluster reports them.
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (master redis.ClusterNode, replicas []redis.ClusterNode, err error) {
	slot, err := c.keySlot(ctx, key)
	if err != nil {
		return master, nil, err
	}
	slots, err := c.slots(ctx)
	if err != nil {
		return master, nil, err
	}
	for _, s := range slots {
		if s.start <= slot && slot <= s.end && s.master.ID != "" {
			return s.master, s.replicas, nil
		}
	}
	return master, nil, fmt.Errorf("slot %d of %s is not served", slot, key)
}

// Failover promotes a replica of key's master (CLUSTER FAILOVER: the
// replica first catches up, so nothing acknowledged is lost).
func (c *RedisCluster) Failover(ctx context.Context, key string) error {
	_, replicas, err := c.MasterOf(ctx, key)
	if err != nil {
		return err
	}
	if len(replicas) == 0 {
		return fmt.Errorf("%s: its master has no replica", key)
	}
	r := redis.NewClient(&redis.Options{Addr: replicas[0].Addr})
	defer r.Close()
	return r.ClusterFailover(ctx).Err()
}

// WaitAgreed waits until `redis-cli --cluster check` passes: every node
// agrees on the slot map and every slot is served (redis-cli refuses to
// reshard before that).
func (c *RedisCluster) WaitAgreed(t testing.TB, d time.Duration) {
	t.Helper()
	cli, err := need("redis-cli")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(d, func() error {
		out, err := exec.Command(cli, "--cluster", "check", c.Nodes[0].Addr).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("[ERR]")) || bytes.Contains(out, []byte("[WARNING]")) {
			return fmt.Errorf("cluster check: %v\n%s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Reshard moves key's slot, the slots its master holds below it and
// `more` above it to another master with `redis-cli --cluster reshard`
// (which takes a source's slots in ascending order). It returns how many
// slots moved.
func (c *RedisCluster) Reshard(t testing.TB, key string, more int) int {
	t.Helper()
	ctx := context.Background()
	cli, err := need("redis-cli")
	if err != nil {
		t.Fatal(err)
	}
	slot, err := c.keySlot(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	slots, err := c.slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src, _, err := c.MasterOf(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	below, owned, dst := 0, 0, ""
	for _, s := range slots {
		if s.master.ID == "" {
			continue
		}
		if s.master.ID != src.ID {
			dst = s.master.ID
			continue
		}
		owned += s.end - s.start + 1
		if s.end < slot {
			below += s.end - s.start + 1
		} else if s.start <= slot {
			below += slot - s.start
		}
	}
	n := min(below+1+more, owned)
	out, err := exec.Command(cli, "--cluster", "reshard", src.Addr, "--cluster-from", src.ID, "--cluster-to", dst,
		"--cluster-slots", fmt.Sprint(n), "--cluster-yes").CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
	return n
}
