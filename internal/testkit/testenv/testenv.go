// Package testenv starts the real services jobgate's integration tests
// run against: redis-server (one per test), containerd + runc (one per
// test process, a containerd namespace per test) and an OCI registry (one
// per process, in-process). A missing service is a test failure, never a
// skip: deploy/setup.sh installs everything.
package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	jgruntime "github.com/jobgate/jobgate/worker/runtime"
)

// Services are shared by all tests of one test binary.
type Services struct {
	Containerd string // socket path
	Registry   string // host:port of a plain-HTTP registry
	JobgateBin string // the jobgate binary (subprocess tests)
	LoggerBin  string // jobgate-logger, the log driver
	dir        string
	ctdBin     string
	ctd        *exec.Cmd
	reg        *httptest.Server
	mu         sync.Mutex
	namespaces []string
	stateDirs  []string                 // workers' state dirs (log driver settings live there)
	blobGets   map[string]int           // repo → blob GETs served
	slowBlobs  map[string]time.Duration // repo → delay before serving a blob
}

// ContainerdState is the shared containerd's state directory.
func (s *Services) ContainerdState() string { return filepath.Join(s.dir, "state") }

// BlobGets returns how many blob downloads the registry served for repo.
func (s *Services) BlobGets(repo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blobGets[repo]
}

// SlowBlobs delays every blob download of repo by d (pull timeouts).
func (s *Services) SlowBlobs(repo string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowBlobs[repo] = d
}

// observe wraps the registry to count (and optionally slow) blob GETs.
func (s *Services) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if repo, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/"); ok && r.Method == http.MethodGet {
			s.mu.Lock()
			s.blobGets[repo]++
			if os.Getenv("JG_DEBUG_BLOBS") != "" {
				fmt.Fprintln(os.Stderr, "BLOB GET", r.URL.Path)
			}
			d := s.slowBlobs[repo]
			s.mu.Unlock()
			if d > 0 {
				select {
				case <-time.After(d):
				case <-r.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

var shared struct {
	once sync.Once
	s    *Services
	err  error
}

// Main runs the package's tests, then stops the shared services.
// Every test leaves no process behind: after the services stop, any
// process of theirs still alive (a job, a provisioned stub, a log driver,
// a shim) fails the run.
func Main(m *testing.M) {
	code := m.Run()
	if shared.s != nil {
		if left := shared.s.stop(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "testenv: %d processes outlived the tests:\n  %s\n", len(left), strings.Join(left, "\n  "))
			code = 1
		}
	}
	if rabbit.r != nil {
		rabbit.r.stop()
	}
	os.Exit(code)
}

// Shared returns the process's services, starting them on first use.
func Shared(t testing.TB) *Services {
	t.Helper()
	shared.once.Do(func() { shared.s, shared.err = start() })
	if shared.err != nil {
		t.Fatalf("testenv: %v", shared.err)
	}
	return shared.s
}

func need(bin string) (string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH: run `bash deploy/setup.sh` (installs redis-server, containerd, runc, docker-registry): %w", bin, err)
	}
	return p, nil
}

// ModuleRoot is the repository root.
func ModuleRoot() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(self), "..", "..", ".."))
}

func start() (*Services, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("integration tests need root (containerd, runc, cgroups)")
	}
	ctdBin, err := need("containerd")
	if err != nil {
		return nil, err
	}
	if _, err := need("runc"); err != nil {
		return nil, err
	}
	if _, err := need("containerd-shim-runc-v2"); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "jgt-")
	if err != nil {
		return nil, err
	}
	s := &Services{dir: dir, Containerd: filepath.Join(dir, "c.sock"), blobGets: map[string]int{}, slowBlobs: map[string]time.Duration{}}

	// The jobgate binary doubles as the log driver that containerd's shim
	// runs, so it must be a real file.
	// jobgate-logger goes next to it, where the worker looks for it.
	if err := s.binaries(dir); err != nil {
		return nil, err
	}

	if err := writeContainerdConfig(dir, s.Containerd); err != nil {
		return nil, err
	}
	s.ctdBin = ctdBin
	if err := s.startContainerd(); err != nil {
		s.stop()
		return nil, err
	}
	s.reg = httptest.NewServer(s.observe(registry.New(registry.Logger(nopLogger()))))
	s.Registry = strings.TrimPrefix(s.reg.URL, "http://")
	return s, nil
}

// startContainerd runs containerd on the services' config and waits
// until it answers.
func (s *Services) startContainerd() error {
	ctd, err := runContainerd(s.ctdBin, s.dir, s.Containerd)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ctd = ctd
	s.mu.Unlock()
	return nil
}

// writeContainerdConfig writes dir/config.toml: a containerd with its
// root, state and socket of its own under dir.
func writeContainerdConfig(dir, socket string) error {
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket, socket+".ttrpc")
	return os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600)
}

// runContainerd starts containerd on dir/config.toml (logging to
// dir/containerd.log) and waits until it answers on socket.
func runContainerd(bin, dir, socket string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	ctd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	ctd.Stdout, ctd.Stderr = logf, logf
	ctd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ctd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if err := waitFor(20*time.Second, func() error {
		rt, err := jgruntime.New(context.Background(), jgruntime.Options{Address: socket, Namespace: "probe"})
		if err != nil {
			return err
		}
		defer rt.Close()
		return rt.Ping(context.Background())
	}); err != nil {
		_ = ctd.Process.Kill()
		_ = ctd.Wait()
		log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
		return nil, fmt.Errorf("containerd did not come up: %v\n%s", err, log)
	}
	return ctd, nil
}

// RestartContainerd SIGKILLs the shared containerd and starts it again on
// the same root, state and socket; shims and their tasks live on.
func (s *Services) RestartContainerd(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	ctd := s.ctd
	s.mu.Unlock()
	_ = ctd.Process.Kill()
	_ = ctd.Wait()
	if err := s.startContainerd(); err != nil {
		t.Fatal(err)
	}
}

// binaries builds jobgate and jobgate-logger into dir, or, when
// deploy/test.sh built them once for every test binary
// ($JOBGATE_TEST_BINDIR), uses those.
func (s *Services) binaries(dir string) error {
	if pre := os.Getenv("JOBGATE_TEST_BINDIR"); pre != "" {
		s.JobgateBin, s.LoggerBin = filepath.Join(pre, "jobgate"), filepath.Join(pre, "jobgate-logger")
		for _, b := range []string{s.JobgateBin, s.LoggerBin} {
			if _, err := os.Stat(b); err != nil {
				return fmt.Errorf("JOBGATE_TEST_BINDIR: %w", err)
			}
		}
		return nil
	}
	s.JobgateBin = filepath.Join(dir, "jobgate")
	s.LoggerBin = filepath.Join(dir, "jobgate-logger")
	for _, args := range [][]string{
		{"build", "-o", s.JobgateBin, "./cmd/jobgate"},
		// Static and stripped, as deploy/up.sh builds it: it starts per job.
		{"build", "-trimpath", "-ldflags=-s -w", "-o", s.LoggerBin, "./cmd/jobgate-logger"},
	} {
		build := exec.Command("go", args...)
		build.Dir = ModuleRoot()
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build jobgate: %v: %s", err, out)
		}
	}
	return nil
}

// stop ends every container of every test namespace (a test that
// SIGKILLed a worker leaves its instances to this), then containerd and
// the registry, and returns the processes still alive that belong to
// them.
func (s *Services) stop() (left []string) {
	if s.reg != nil {
		s.reg.Close()
	}
	s.mu.Lock()
	nss, dirs := append([]string(nil), s.namespaces...), append([]string(nil), s.stateDirs...)
	s.mu.Unlock()
	if c, err := containerd.New(s.Containerd); err == nil {
		for _, ns := range nss {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := (&Containerd{c: c, ns: ns}).Purge(ctx); err != nil {
				fmt.Fprintf(os.Stderr, "testenv: purge namespace %s: %v\n", ns, err)
			}
			cancel()
		}
		c.Close()
	}
	// Shims outlive containerd by design; end ours.
	_ = exec.Command("pkill", "-9", "-f", "containerd-shim-runc-v2 .*"+s.Containerd).Run()
	s.mu.Lock()
	ctd := s.ctd
	s.mu.Unlock()
	if ctd != nil && ctd.Process != nil {
		_ = ctd.Process.Kill()
		_ = ctd.Wait()
	}
	unmountUnder(s.dir)
	s.mu.Lock()
	for _, ns := range s.namespaces {
		matches, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
		for _, m := range matches {
			_ = os.Remove(m)
		}
	}
	s.mu.Unlock()
	_ = os.RemoveAll(s.dir)
	return leftovers(append([]string{s.dir}, dirs...), nss)
}

// leftovers lists live processes whose command line names one of dirs
// (shims name the socket, log drivers their settings) or whose cgroup is
// in one of the containerd namespaces (jobs, stubs).
func leftovers(dirs, namespaces []string) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, p := range procs {
		raw, err := os.ReadFile(p + "/cmdline")
		if err != nil || len(raw) == 0 {
			continue
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
		cg, _ := os.ReadFile(p + "/cgroup")
		mine := false
		for _, d := range dirs {
			mine = mine || strings.Contains(cmdline, d+"/")
		}
		for _, ns := range namespaces {
			mine = mine || strings.Contains(string(cg), "/"+ns+"/")
		}
		if mine {
			out = append(out, filepath.Base(p)+" "+cmdline)
		}
	}
	return out
}

func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			mounts = append(mounts, fields[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// Namespace returns a containerd namespace unique to t.
func (s *Services) Namespace(t testing.TB) string {
	ns := fmt.Sprintf("jgt-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	s.mu.Lock()
	s.namespaces = append(s.namespaces, ns)
	s.mu.Unlock()
	return ns
}

// stateDir is a worker state dir for t, remembered for the leak check.
func (s *Services) stateDir(t testing.TB) string {
	d := t.TempDir()
	s.mu.Lock()
	s.stateDirs = append(s.stateDirs, d)
	s.mu.Unlock()
	return d
}

// Redis starts a private redis-server for t and returns its address.
func Redis(t testing.TB) string {
	t.Helper()
	return StartRedis(t).Addr
}

// RedisServer is a private redis-server.
type RedisServer struct {
	Addr string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// Kill stops the server abruptly (for "Redis down" tests).
func (r *RedisServer) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// Start starts a killed server again on the same port and data directory.
func (r *RedisServer) Start(t testing.TB) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
}

// Restart SIGKILLs the server and starts it again on the same port and
// data directory (what it kept depends on its persistence options).
func (r *RedisServer) Restart(t testing.TB) {
	t.Helper()
	r.Kill()
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
}

func (r *RedisServer) start() error {
	bin, err := need("redis-server")
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, r.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	addr := r.Addr
	// The server that answers must be this one: test binaries run side by
	// side, and one may have bound the port between another's FreePort
	// and its start (ours then exits, and a PING would reach theirs: two
	// tests sharing one Redis, seen once in CI as a stranger's task).
	taken := false
	if err := waitFor(20*time.Second, func() error {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		defer c.Close()
		info, err := c.Info(context.Background(), "server").Result()
		if err != nil {
			return err
		}
		taken = !strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", cmd.Process.Pid))
		return nil
	}); err != nil {
		return fmt.Errorf("redis-server on %s did not come up: %w", addr, err)
	}
	if taken {
		r.Kill()
		return fmt.Errorf("%w: %s", errPortTaken, addr)
	}
	return nil
}

// errPortTaken: another process's redis-server answers on the port.
var errPortTaken = errors.New("another redis-server took the port")

// StartRedis starts a private redis-server without persistence, stopped
// at t's cleanup.
func StartRedis(t testing.TB) *RedisServer { return StartRedisAOF(t, "") }

// StartRedisAOF is StartRedis with the append-only file on and fsync
// policy appendfsync (always, everysec); "" means no persistence.
func StartRedisAOF(t testing.TB, appendfsync string) *RedisServer {
	t.Helper()
	dir := t.TempDir()
	var srv *RedisServer
	for try := 0; ; try++ {
		port := FreePort(t)
		args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--maxmemory-policy", "noeviction", "--daemonize", "no"}
		if appendfsync == "" {
			args = append(args, "--appendonly", "no")
		} else {
			args = append(args, "--appendonly", "yes", "--appendfsync", appendfsync)
		}
		srv = &RedisServer{Addr: fmt.Sprintf("127.0.0.1:%d", port), args: args}
		err := srv.start()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || try == 4 {
			t.Fatal(err)
		}
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(srv.Kill) })
	return srv
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p := freePort()
	if p == 0 {
		t.Fatal("no free port")
	}
	return p
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// Config returns a complete config for a test: its own Redis and
// containerd namespace, the shared containerd, and fns.
func (s *Services) Config(t testing.TB, redisAddr string, fns ...config.Function) *config.Config {
	t.Helper()
	grace := 2
	// Jobs of tests that do not ask for a network mode get none (the
	// network tests ask for bridge, with a bridge of their own: JobNetwork).
	for i := range fns {
		if fns[i].Network == "" {
			fns[i].Network = config.NetworkNone
		}
	}
	c := &config.Config{
		Redis:      config.Redis{Addr: redisAddr},
		Containerd: config.Containerd{Address: s.Containerd, Namespace: s.Namespace(t)},
		Gateway:    config.Gateway{Listen: "127.0.0.1:0", WaitTimeoutS: 30},
		Worker: config.Worker{Node: "test-node", StateDir: s.stateDir(t), LoggerBinary: s.LoggerBin, PullTimeoutS: 60, StopGraceS: &grace,
			// The tests' receivers listen on loopback.
			Destinations: config.Destinations{Allow: []string{"127.0.0.0/8"}}},
		Region: "ap-guangzhou", AppID: "1250000000", UIN: "100000000001",
		Functions: fns,
	}
	if err := config.Complete(c, "test"); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return c
}

// waitFor is EventuallyNoError for code without a testing.TB.
func waitFor(d time.Duration, f func() error) error {
	var last error
	if poll(d, func() bool { last = f(); return last == nil }) != nil {
		return last
	}
	return nil
}

// Logger returns a zerolog logger writing to t, silent once t is done
// (supervisors may log after the test body returns).
func Logger(t testing.TB) zerolog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "15:04:05.000"}).With().Timestamp().Logger()
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
