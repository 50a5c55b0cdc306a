package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartRedisTLS starts a private redis-server that speaks only TLS (a
// self-signed certificate for 127.0.0.1) and requires password, and
// returns its rediss:// URL (certificate checks off: the CA is the
// test's own).
func StartRedisTLS(t testing.TB, password string) string {
	t.Helper()
	addr, _ := StartRedisTLSServer(t, password)
	return fmt.Sprintf("rediss://:%s@%s/0?skip_verify=true", password, addr)
}

// StartRedisTLSServer is StartRedisTLS returning the server's address and
// the file of its certificate (a CA to trust, for clients that verify).
func StartRedisTLSServer(t testing.TB, password string) (addr, caFile string) {
	t.Helper()
	bin, err := need("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "redis.crt"), filepath.Join(dir, "redis.key")
	if err := selfSigned(cert, key); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	cmd := exec.Command(bin, "--port", "0", "--tls-port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir,
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no",
		"--requirepass", password, "--save", "", "--appendonly", "no", "--daemonize", "no")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server (tls): %v", err)
	}
	srv := &RedisServer{Addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	var once sync.Once
	t.Cleanup(func() { once.Do(srv.Kill) })
	url := fmt.Sprintf("rediss://:%s@%s/0?skip_verify=true", password, srv.Addr)
	if err := waitFor(10*time.Second, func() error {
		o, err := redis.ParseURL(url)
		if err != nil {
			return err
		}
		c := redis.NewClient(o)
		defer c.Close()
		return c.Ping(context.Background()).Err()
	}); err != nil {
		t.Fatalf("redis-server (tls) on %s did not come up: %v", srv.Addr, err)
	}
	return srv.Addr, cert
}

func selfSigned(certPath, keyPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jobgate test redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return nil
}
