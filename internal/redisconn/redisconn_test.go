package redisconn_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/redisconn"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestResolveAndOptions(t *testing.T) {
	t.Setenv("RC_PW", "data-pw")
	t.Setenv("RC_SPW", "sentinel-pw")
	c := config.Redis{URL: "rediss://old:urlpw@redis.example:6380/3?skip_verify=true", Username: "jobgate", PasswordEnv: "RC_PW"}
	tg := redisconn.Resolve(c)
	o, err := tg.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Addrs[0] != "redis.example:6380" || o.DB != 3 || o.Username != "jobgate" || o.Password != "data-pw" || o.TLSConfig == nil ||
		!o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("url + block: %+v", o)
	}
	if s := tg.String(); strings.Contains(s, "urlpw") || strings.Contains(s, "data-pw") {
		t.Fatalf("String leaks a password: %s", s)
	}

	tg = redisconn.Resolve(config.Redis{Sentinel: &config.RedisSentinel{Master: "m", Addrs: []string{"a:1", "b:2"}, Username: "sen", PasswordEnv: "RC_SPW"},
		PasswordEnv: "RC_PW"})
	if tg.Mode() != redisconn.ModeSentinel {
		t.Fatalf("mode %s", tg.Mode())
	}
	if o, err = tg.Options(redisconn.NoRetries); err != nil {
		t.Fatal(err)
	}
	if o.MasterName != "m" || len(o.Addrs) != 2 || o.SentinelUsername != "sen" || o.SentinelPassword != "sentinel-pw" ||
		o.Password != "data-pw" || o.MaxRetries != -1 {
		t.Fatalf("sentinel: %+v", o)
	}
	ao, err := tg.AsynqOpt()
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := ao.(asynq.RedisFailoverClientOpt); !ok || f.MasterName != "m" || f.SentinelPassword != "sentinel-pw" || f.Password != "data-pw" {
		t.Fatalf("asynq sentinel option: %#v", ao)
	}

	tg = redisconn.Resolve(config.Redis{Cluster: &config.RedisCluster{Addrs: []string{"a:1", "b:2", "c:3"}}})
	if ao, err = tg.AsynqOpt(); err != nil {
		t.Fatal(err)
	}
	if f, ok := ao.(asynq.RedisClusterClientOpt); !ok || len(f.Addrs) != 3 {
		t.Fatalf("asynq cluster option: %#v", ao)
	}
	tg.DB = 2
	if _, err := tg.Options(); err == nil || !strings.Contains(err.Error(), "db 0") {
		t.Fatalf("cluster with db 2: %v", err)
	}

	if tg := redisconn.Resolve(config.Redis{}); tg.Addr != config.DefaultRedisAddr {
		t.Fatalf("default address %q", tg.Addr)
	}

	bad := []struct {
		tls  config.RedisTLS
		want string
	}{
		{config.RedisTLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}, "ca_file"},
		{config.RedisTLS{CertFile: "c.pem"}, "go together"},
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad = append(bad, struct {
		tls  config.RedisTLS
		want string
	}{config.RedisTLS{CAFile: notPEM}, "no PEM"})
	for _, b := range bad {
		tls := b.tls
		if _, err := (redisconn.Target{Addr: "x:1", TLS: &tls}).Client(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("tls %+v: %v, want %q", b.tls, err, b.want)
		}
	}
}

// TLS with the server's certificate checked against ca_file (no
// skip_verify), and a wrong server name refused.
func TestTLSWithCAFile(t *testing.T) {
	addr, ca := testenv.StartRedisTLSServer(t, "tls-pw")
	t.Setenv("RC_TLS_PW", "tls-pw")
	ctx := context.Background()
	good := redisconn.Resolve(config.Redis{Addr: addr, PasswordEnv: "RC_TLS_PW", TLS: &config.RedisTLS{CAFile: ca}})
	c, err := good.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("verified TLS: %v", err)
	}
	wrong := redisconn.Resolve(config.Redis{Addr: addr, PasswordEnv: "RC_TLS_PW", TLS: &config.RedisTLS{CAFile: ca, ServerName: "not-this-host"}})
	w, err := wrong.Client(func(o *redis.UniversalOptions) { o.MaxRetries = -1 })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("wrong server name: %v, want a certificate error", err)
	}
}

// A client built for Sentinel finds the master, follows a failover, and
// asynq (sharing it) enqueues on the new master.
func TestSentinelFollowsFailover(t *testing.T) {
	t.Parallel()
	g := testenv.StartSentinelGroup(t)
	ctx := context.Background()
	tg := redisconn.Resolve(config.Redis{Sentinel: &config.RedisSentinel{Master: testenv.SentinelMaster, Addrs: g.SentinelAddrs()}})
	c, err := tg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Written and confirmed by the replica (WAIT on the connection that
	// wrote): a write it had not received yet would be lost by the
	// switch, which is asynchronous replication, not the client.
	conn := c.(*redis.Client).Conn()
	if err := conn.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("wait for the replica: %d %v", n, err)
	}
	conn.Close()
	first, err := g.Master(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first != g.Nodes[0].Addr {
		t.Fatalf("master %s, want %s", first, g.Nodes[0].Addr)
	}
	if err := g.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the sentinels to name the replica master", func() bool {
		m, err := g.Master(ctx)
		return err == nil && m == g.Nodes[1].Addr
	})
	// go-redis learns of the switch from the sentinels (+switch-master)
	// and then writes to the new master. Until then a write can still
	// reach the old one and vanish when it turns replica: asynchronous
	// replication, what redis.wait_replicas guards against.
	direct := redis.NewClient(&redis.Options{Addr: g.Nodes[1].Addr})
	defer direct.Close()
	testenv.EventuallyNoError(t, 30*time.Second, "a write on the new master", func() error {
		if err := c.Set(ctx, "after", "1", 0).Err(); err != nil {
			return err
		}
		return direct.Get(ctx, "after").Err()
	})
	if v, err := direct.Get(ctx, "before").Result(); err != nil || v != "1" {
		t.Fatalf("a write from before the failover is gone: %q %v", v, err)
	}
	q := asynq.NewClientFromRedisClient(c)
	if _, err := q.Enqueue(asynq.NewTask("t", nil), asynq.Queue("sentinel")); err != nil {
		t.Fatalf("asynq over the failover client: %v", err)
	}
	if n, err := direct.LLen(ctx, "asynq:{sentinel}:pending").Result(); err != nil || n != 1 {
		t.Fatalf("asynq's task is not on the new master: %d %v", n, err)
	}
}

// A cluster client reaches every slot.
func TestClusterClient(t *testing.T) {
	t.Parallel()
	rc := testenv.StartRedisCluster(t, 3, 0)
	ctx := context.Background()
	c, err := redisconn.Resolve(config.Redis{Cluster: &config.RedisCluster{Addrs: rc.Addrs()[:1]}}).Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("client is %T", c)
	}
	owners := map[string]bool{}
	for i := 0; i < 30; i++ {
		k := "k" + strings.Repeat("x", i)
		if err := c.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		n, err := cc.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		owners[n.Options().Addr] = true
	}
	if len(owners) != 3 {
		t.Fatalf("30 keys on %d masters, want all 3", len(owners))
	}
}
