package config

import (
	"fmt"
	"os"
)

// Resolve completes a parsed config from this host's environment and
// checks what only the environment can say: worker.node defaults to
// $JOBGATE_NODE (e.g. the Kubernetes node name), then the hostname; every
// *_env variable the config names must be set, every file it names must
// exist. name is used in errors.
func Resolve(c *Config, name string) error {
	c.resolveNode()
	var probs []Problem
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	needEnv := func(path, env string) {
		if env == "" {
			return
		}
		if _, ok := os.LookupEnv(env); !ok {
			add(path, "environment variable %s is not set", env)
		}
	}
	needSecret := func(path, env string) {
		if env == "" {
			return
		}
		if v, ok := os.LookupEnv(env); !ok {
			add(path, "environment variable %s is not set", env)
		} else if v == "" {
			add(path, "environment variable %s is empty: a trigger secret must not be", env)
		}
	}
	needEnv("redis.password_env", c.Redis.PasswordEnv)
	if c.Redis.Sentinel != nil {
		needEnv("redis.sentinel.password_env", c.Redis.Sentinel.PasswordEnv)
	}
	if t := c.Redis.TLS; t != nil {
		for key, f := range map[string]string{"ca_file": t.CAFile, "cert_file": t.CertFile, "key_file": t.KeyFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				add("redis.tls."+key, "%v", err)
			}
		}
	}
	if c.Worker.DockerConfig != "" {
		if _, err := os.Stat(c.Worker.DockerConfig); err != nil {
			add("worker.docker_config", "%v", err)
		}
	}
	for host, r := range c.Registries {
		needEnv("registries."+host+".password_env", r.PasswordEnv)
	}
	for i, f := range c.Functions {
		for kind, ds := range map[string][]Destination{"on_success": f.OnSuccess, "on_failure": f.OnFailure} {
			for j, d := range ds {
				dp := fmt.Sprintf("functions[%d].%s[%d]", i, kind, j)
				needSecret(dp+".secret_env", d.SecretEnv)
				if d.RedisStream != nil {
					needEnv(dp+".redis_stream.password_env", d.RedisStream.PasswordEnv)
				}
				if d.AMQP != nil {
					needEnv(dp+".amqp.url_env", d.AMQP.URLEnv)
				}
				if d.Kafka != nil && d.Kafka.SASL != nil {
					needEnv(dp+".kafka.sasl.password_env", d.Kafka.SASL.PasswordEnv)
				}
			}
		}
		for j, t := range f.Triggers {
			tp := fmt.Sprintf("functions[%d].triggers[%d]", i, j)
			if t.http != nil && t.http.Auth != nil {
				// Fail closed: an empty token or secret would accept
				// anyone (an HMAC keyed with "" is computable by all).
				needSecret(tp+".auth.bearer.token_env", envOf(t.http.Auth.Bearer))
				needSecret(tp+".auth.hmac_sha256.secret_env", envOfHMAC(t.http.Auth.HMACSHA256))
			}
			if q := t.queue; q != nil {
				needEnv(tp, q.PasswordEnv)
				needEnv(tp, q.URLEnv)
				if q.SASL != nil {
					needEnv(tp+".sasl", q.SASL.PasswordEnv)
				}
			}
		}
	}
	c.checkSubnetRoutes(add, "/proc/net/route")
	if len(probs) > 0 {
		return &Error{File: name, Problems: probs}
	}
	return nil
}

// resolveNode fills worker.node from the environment when unset.
func (c *Config) resolveNode() {
	if c.Worker.Node == "" {
		c.Worker.Node = os.Getenv("JOBGATE_NODE")
	}
	if c.Worker.Node == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Worker.Node = h
	}
}
