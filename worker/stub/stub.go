// Package stub is the first process of a provisioned ("warm") instance.
// It runs inside the job's container, made and started before any event:
// it checks that the command exists, waits for the worker to write the
// instance's environment (event included) into a FIFO, and execs the
// command with it. From the exec on, the job is PID 1 as if started
// directly; the stub leaves nothing behind.
package stub

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Layout shared by the worker (host side) and the stub (container side).
const (
	// Arg is the argument that makes jobgate-logger act as the stub.
	Arg = "_jobgate_stub"
	// Path is where the stub binary is mounted in the container.
	Path = "/.jobgate/stub"
	// RunDir is where the instance's run directory is mounted.
	RunDir = "/.jobgate/run"
	// StartFIFO (in the run directory) carries the environment, a JSON
	// string array.
	StartFIFO = "start"
	// InstanceFile (in the run directory, host side) names the instance
	// id the log driver writes under.
	InstanceFile = "instance"
)

// FIFO is the start FIFO as the stub sees it.
const FIFO = RunDir + "/" + StartFIFO

// LogInstance returns the instance id a log driver writes container
// ctrID's output under: the released instance's when runDirs/ctrID names
// one, else ctrID.
func LogInstance(runDirs, ctrID string) string {
	if runDirs != "" {
		if b, err := os.ReadFile(filepath.Join(runDirs, ctrID, InstanceFile)); err == nil && len(b) > 0 {
			return string(b)
		}
	}
	return ctrID
}

// Main runs the stub for argv (the job's command line); it never returns.
func Main(argv []string) {
	if len(argv) == 0 {
		fail(2, "no command")
	}
	// Fail now, while the pool fills, not when an event arrives.
	if _, err := exec.LookPath(argv[0]); err != nil {
		fail(127, err.Error())
	}
	f, err := os.Open(FIFO) // blocks until the worker opens it to write
	if err != nil {
		fail(2, err.Error())
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		fail(2, err.Error())
	}
	var env []string
	if len(b) == 0 {
		os.Exit(0) // released without an event: the pool is shrinking
	}
	if err := json.Unmarshal(b, &env); err != nil {
		fail(2, "environment: "+err.Error())
	}
	// Resolve the command with the job's own PATH, as runc would.
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			_ = os.Setenv("PATH", v)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail(127, err.Error())
	}
	err = syscall.Exec(path, argv, env)
	fail(126, fmt.Sprintf("exec %s: %v", path, err))
}

func fail(code int, msg string) {
	fmt.Fprintln(os.Stderr, "jobgate stub:", msg)
	os.Exit(code)
}
