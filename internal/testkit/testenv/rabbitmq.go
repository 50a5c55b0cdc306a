package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RabbitMQ is a private rabbitmq-server (Debian's), one per test process.
type RabbitMQ struct {
	URL  string // amqp://guest:guest@127.0.0.1:PORT/
	Node string // for rabbitmqctl -n
	dir  string
}

var rabbit struct {
	once sync.Once
	r    *RabbitMQ
	err  error
}

// StartRabbitMQ returns the process's rabbitmq-server, starting it on
// first use (about 8 s). Main stops it.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	rabbit.once.Do(func() { rabbit.r, rabbit.err = startRabbit() })
	if rabbit.err != nil {
		t.Fatalf("testenv: %v", rabbit.err)
	}
	return rabbit.r
}

func startRabbit() (*RabbitMQ, error) {
	bin, err := need("rabbitmq-server")
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return nil, fmt.Errorf("user rabbitmq (from the rabbitmq-server package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "jgrmq-")
	if err != nil {
		return nil, err
	}
	// The package's wrapper runs the broker as user rabbitmq.
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	port := freePort()
	node := fmt.Sprintf("jgt%d@localhost", port)
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1", "RABBITMQ_NODE_PORT="+strconv.Itoa(port), "RABBITMQ_NODENAME="+node,
		"RABBITMQ_DIST_PORT="+strconv.Itoa(freePort()), "RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"), "RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"))
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start rabbitmq-server: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	r := &RabbitMQ{URL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port), Node: node, dir: dir}
	if err := waitFor(60*time.Second, func() error { return exec.Command("rabbitmqctl", "-n", node, "-q", "status").Run() }); err != nil {
		out, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		return nil, fmt.Errorf("rabbitmq-server did not come up: %v\n%s", err, out)
	}
	return r, nil
}

// Ctl runs rabbitmqctl against this node.
func (r *RabbitMQ) Ctl(args ...string) ([]byte, error) {
	return exec.Command("rabbitmqctl", append([]string{"-n", r.Node, "-q"}, args...)...).Output()
}

func (r *RabbitMQ) stop() {
	_, _ = r.Ctl("stop")
	_ = os.RemoveAll(r.dir)
}

// Ports handed out come from below the kernel's ephemeral range
// (32768–60999 here), walked from a random start per process: a port
// from listen(":0") can be handed out again, to another test or as a
// connection's source port, in the moment before the server binds it.
var ports struct {
	sync.Mutex
	next int
}

const portLow, portHigh = 20000, 32000

func freePort() int {
	ports.Lock()
	defer ports.Unlock()
	if ports.next == 0 {
		ports.next = portLow + rand.IntN(portHigh-portLow)
	}
	for range portHigh - portLow {
		p := ports.next
		if ports.next++; ports.next >= portHigh {
			ports.next = portLow
		}
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p
		}
	}
	return 0
}
