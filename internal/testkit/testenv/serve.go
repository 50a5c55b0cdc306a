package testenv

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/jobgate/jobgate/internal/config"
)

// WriteConfig writes cfg as a YAML file for `jobgate serve`.
func WriteConfig(t testing.TB, cfg *config.Config) string {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jobgate.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err != nil {
		t.Fatalf("written config does not load: %v\n%s", err, b)
	}
	return path
}

// Serve is a `jobgate serve` subprocess.
type Serve struct {
	Cmd *exec.Cmd
	Out *SyncBuffer
}

// StartServe runs `jobgate serve --role role --config cfgPath` and waits
// until it is ready: the API at url answers /readyz (gateway, all) or the
// worker has started (worker). It is killed at test cleanup.
func (s *Services) StartServe(t testing.TB, cfgPath, role, url string) *Serve {
	t.Helper()
	return s.StartServeEnv(t, cfgPath, role, url, nil)
}

// StartServeEnv is StartServe with env added to the process's
// environment (JOBGATE_TOKENS, for one).
func (s *Services) StartServeEnv(t testing.TB, cfgPath, role, url string, env []string) *Serve {
	t.Helper()
	cmd := exec.Command(s.JobgateBin, "serve", "--config", cfgPath, "--role", role)
	cmd.Env = append(os.Environ(), env...)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Stopped as an operator would, so its work ends cleanly (a
		// SIGKILL here would be a crash test of its own).
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("jobgate serve --role %s output (its last %d lines):\n%s", role, dumpLines, lastLines(out.String(), dumpLines))
		}
	})
	if err := poll(20*time.Second, func() bool {
		if role == "worker" {
			return strings.Contains(out.String(), "worker started")
		}
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}); err != nil {
		t.Fatalf("jobgate serve --role %s not ready within 20 s:\n%s", role, out.String())
	}
	return &Serve{Cmd: cmd, Out: out}
}

// dumpLines bounds a failed test's dump of a process's output: a fleet
// runs six of them, and the end is what explains a failure.
const dumpLines = 300

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// SyncBuffer is a bytes.Buffer safe for a subprocess writer and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ReplaceSection replaces what lies between begin and end (begin kept,
// end kept) in the file at path with body: how suites write their
// measured tables into docs/*.md.
func ReplaceSection(path, begin, end, body string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(raw)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q … %q section", path, begin, end)
	}
	return os.WriteFile(path, []byte(s[:i]+begin+body+s[j:]), 0o644)
}
