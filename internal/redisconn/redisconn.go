// Package redisconn builds every Redis client jobgate uses — gateway,
// worker, triggers, timers, the log driver, asynqmon — from the one
// `redis:` config block: a single node (addr or url), a master found
// through Sentinel, or a Redis Cluster, each with TLS and ACL users.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
)

// Mode names a topology.
const (
	ModeSingle   = "single"
	ModeSentinel = "sentinel"
	ModeCluster  = "cluster"
)

// Target is the config block resolved: passwords read from the
// environment. It is what the log driver receives (in a root-only file:
// it runs under containerd's shim, without jobgate's environment).
type Target struct {
	URL      string           `json:"url,omitempty"`
	Addr     string           `json:"addr,omitempty"`
	DB       int              `json:"db,omitempty"`
	Username string           `json:"username,omitempty"`
	Password string           `json:"password,omitempty"`
	Sentinel *Sentinel        `json:"sentinel,omitempty"`
	Cluster  []string         `json:"cluster,omitempty"`
	TLS      *config.RedisTLS `json:"tls,omitempty"`
}

// Sentinel is a resolved redis.sentinel block.
type Sentinel struct {
	Master   string   `json:"master"`
	Addrs    []string `json:"addrs"`
	Username string   `json:"username,omitempty"`
	Password string   `json:"password,omitempty"`
}

// Resolve reads the passwords the block names from the environment.
func Resolve(c config.Redis) Target {
	t := Target{URL: c.URL, Addr: c.Addr, DB: c.DB, Username: c.Username, TLS: c.TLS}
	if c.PasswordEnv != "" {
		t.Password = os.Getenv(c.PasswordEnv)
	}
	if s := c.Sentinel; s != nil {
		t.Sentinel = &Sentinel{Master: s.Master, Addrs: s.Addrs, Username: s.Username}
		if s.PasswordEnv != "" {
			t.Sentinel.Password = os.Getenv(s.PasswordEnv)
		}
	}
	if c.Cluster != nil {
		t.Cluster = c.Cluster.Addrs
	}
	if t.URL == "" && t.Addr == "" && t.Sentinel == nil && t.Cluster == nil {
		t.Addr = config.DefaultRedisAddr
	}
	return t
}

// Mode is the target's topology.
func (t Target) Mode() string {
	switch {
	case t.Sentinel != nil:
		return ModeSentinel
	case len(t.Cluster) > 0:
		return ModeCluster
	}
	return ModeSingle
}

// String names the target without its credentials.
func (t Target) String() string {
	switch t.Mode() {
	case ModeSentinel:
		return fmt.Sprintf("sentinel master %s via %s", t.Sentinel.Master, strings.Join(t.Sentinel.Addrs, ","))
	case ModeCluster:
		return "cluster " + strings.Join(t.Cluster, ",")
	}
	if t.URL != "" {
		if u, err := url.Parse(t.URL); err == nil {
			return u.Redacted()
		}
		return "(unparsable url)"
	}
	return t.Addr
}

// Option adjusts a client.
type Option func(*redis.UniversalOptions)

// NoRetries makes a client report a failed command instead of resending
// it: for callers that must know whether a write may have run.
func NoRetries(o *redis.UniversalOptions) { o.MaxRetries = -1 }

// RESP2 speaks RESP2: go-redis then skips its look for RESP3 push
// notifications before each reply (4% of a gateway's CPU on the submit
// path, whose client subscribes to nothing).
func RESP2(o *redis.UniversalOptions) { o.Protocol = 2 }

// PoolSize sets the connections per node.
func PoolSize(n int) Option { return func(o *redis.UniversalOptions) { o.PoolSize = n } }

// Options is the target as go-redis universal options.
func (t Target) Options(opts ...Option) (*redis.UniversalOptions, error) {
	o := &redis.UniversalOptions{Username: t.Username, Password: t.Password, DB: t.DB}
	switch t.Mode() {
	case ModeSentinel:
		if t.Sentinel.Master == "" || len(t.Sentinel.Addrs) == 0 {
			return nil, errors.New("redis sentinel: master and addrs are required")
		}
		o.MasterName, o.Addrs = t.Sentinel.Master, t.Sentinel.Addrs
		o.SentinelUsername, o.SentinelPassword = t.Sentinel.Username, t.Sentinel.Password
	case ModeCluster:
		if t.DB != 0 {
			return nil, errors.New("redis cluster: only db 0 exists")
		}
		o.Addrs = t.Cluster
	default:
		if t.URL != "" {
			u, err := redis.ParseURL(t.URL)
			if err != nil {
				return nil, fmt.Errorf("redis url: %w", err)
			}
			o.Addrs, o.DB, o.TLSConfig = []string{u.Addr}, u.DB, u.TLSConfig
			o.Username, o.Password = u.Username, u.Password
			o.Protocol, o.ClientName = u.Protocol, u.ClientName
			o.MaxRetries, o.PoolSize, o.MinIdleConns = u.MaxRetries, u.PoolSize, u.MinIdleConns
			o.DialTimeout, o.ReadTimeout, o.WriteTimeout = u.DialTimeout, u.ReadTimeout, u.WriteTimeout
			// The block's credentials win over the URL's.
			if t.Username != "" {
				o.Username = t.Username
			}
			if t.Password != "" {
				o.Password = t.Password
			}
		} else {
			o.Addrs = []string{t.Addr}
		}
	}
	if t.TLS != nil {
		c, err := tlsConfig(*t.TLS, o.TLSConfig)
		if err != nil {
			return nil, err
		}
		o.TLSConfig = c
	}
	for _, f := range opts {
		f(o)
	}
	return o, nil
}

// tlsConfig builds the TLS settings; base (a rediss:// URL's) supplies
// the server name when the block does not.
func tlsConfig(c config.RedisTLS, base *tls.Config) (*tls.Config, error) {
	out := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify}
	if base != nil {
		if out.ServerName == "" {
			out.ServerName = base.ServerName
		}
		out.InsecureSkipVerify = out.InsecureSkipVerify || base.InsecureSkipVerify
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis tls ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis tls ca_file %s: no PEM certificate in it", c.CAFile)
		}
		out.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("redis tls: cert_file and key_file go together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("redis tls client certificate: %w", err)
		}
		out.Certificates = []tls.Certificate{cert}
	}
	return out, nil
}

// Client connects to the target: a *redis.Client (single node, or the
// Sentinel-found master: go-redis follows a failover) or a
// *redis.ClusterClient.
func (t Target) Client(opts ...Option) (redis.UniversalClient, error) {
	o, err := t.Options(opts...)
	if err != nil {
		return nil, err
	}
	switch t.Mode() {
	case ModeSentinel:
		return redis.NewFailoverClient(o.Failover()), nil
	case ModeCluster:
		return redis.NewClusterClient(o.Cluster()), nil
	}
	return redis.NewClient(o.Simple()), nil
}

// AsynqOpt is the target as asynq connection options (for what builds
// its own client from them: asynqmon).
func (t Target) AsynqOpt() (asynq.RedisConnOpt, error) {
	o, err := t.Options()
	if err != nil {
		return nil, err
	}
	switch t.Mode() {
	case ModeSentinel:
		return asynq.RedisFailoverClientOpt{MasterName: o.MasterName, SentinelAddrs: o.Addrs,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig}, nil
	case ModeCluster:
		return asynq.RedisClusterClientOpt{Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig}, nil
	}
	return asynq.RedisClientOpt{Addr: o.Addrs[0], Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig}, nil
}

// Scan calls fn with every key matching pattern. On a Cluster a SCAN
// reaches one node only: there it runs on every master (fn is then
// called from one goroutine per master, one call at a time).
func Scan(ctx context.Context, rdb redis.UniversalClient, pattern string, fn func(key string) error) error {
	scan := func(ctx context.Context, c redis.Cmdable, fn func(string) error) error {
		iter := c.Scan(ctx, 0, pattern, 100).Iterator()
		for iter.Next(ctx) {
			if err := fn(iter.Val()); err != nil {
				return err
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("scan %s: %w", pattern, err)
		}
		return nil
	}
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return scan(ctx, rdb, fn)
	}
	var mu sync.Mutex
	return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return scan(ctx, c, func(key string) error {
			mu.Lock()
			defer mu.Unlock()
			return fn(key)
		})
	})
}
