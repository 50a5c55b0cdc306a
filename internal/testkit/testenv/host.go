package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
)

// Host is one simulated worker host: a containerd of its own (socket,
// root, state), a containerd namespace and a worker state directory, so
// that Kill can take all of it down at once as a lost machine would.
type Host struct {
	Containerd string // socket
	Namespace  string
	StateDir   string
	dir        string
	mu         sync.Mutex
	ctd        *exec.Cmd
	killed     bool
}

// StartHost starts a host's containerd; everything of the host is
// stopped and removed at t's cleanup.
func (s *Services) StartHost(t testing.TB) *Host {
	t.Helper()
	dir, err := os.MkdirTemp("", "jgh-")
	if err != nil {
		t.Fatal(err)
	}
	h := &Host{Containerd: filepath.Join(dir, "c.sock"), Namespace: s.Namespace(t), StateDir: filepath.Join(dir, "worker"), dir: dir}
	if err := os.Mkdir(h.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeContainerdConfig(dir, h.Containerd); err != nil {
		t.Fatal(err)
	}
	if h.ctd, err = runContainerd(s.ctdBin, dir, h.Containerd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !h.isKilled() {
			// Containers left by the test go first, as an operator's
			// shutdown would remove them.
			if c, err := containerd.New(h.Containerd); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_ = (&Containerd{c: c, ns: h.Namespace}).Purge(ctx)
				cancel()
				c.Close()
			}
		}
		h.Kill()
		unmountUnder(dir)
		for _, m := range must(filepath.Glob("/sys/fs/cgroup/*/" + h.Namespace)) {
			_ = os.Remove(m)
		}
		_ = os.RemoveAll(dir)
	})
	return h
}

func must[T any](v T, _ error) T { return v }

func (h *Host) isKilled() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.killed
}

// Kill SIGKILLs, at once, the host's containerd, its shims, its jobs'
// processes and their log drivers: what a machine losing power leaves
// running elsewhere is nothing. (The worker process is the caller's.)
func (h *Host) Kill() {
	h.mu.Lock()
	h.killed = true
	ctd := h.ctd
	h.mu.Unlock()
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, _ := os.ReadFile(p + "/cmdline")
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		cg, _ := os.ReadFile(p + "/cgroup")
		if strings.Contains(cmdline, h.dir+"/") || strings.Contains(string(cg), "/"+h.Namespace+"/") {
			pids = append(pids, pid)
		}
	}
	if ctd != nil && ctd.Process != nil {
		_ = ctd.Process.Kill()
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if ctd != nil {
		_ = ctd.Wait()
	}
}
