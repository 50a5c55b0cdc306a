package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Leftover is a process of this namespace that serves no task containerd
// knows: a shim whose tasks are all gone, or a container process (often a
// `runc init` whose create was cut short by a crash) whose task is gone.
type Leftover struct {
	Pid  int
	Kind string // "shim" or "process"
	ID   string // the container id it was started for
}

// Key identifies a leftover across scans (a pid may be reused).
func (l Leftover) Key() string { return fmt.Sprintf("%d/%s/%s", l.Pid, l.Kind, l.ID) }

// proc is what Leftovers reads of one process.
type proc struct {
	pid, ppid int
	args      []string
	cgroup    string // /proc/<pid>/cgroup
}

// Leftovers lists this namespace's leftover processes. A create in
// progress looks the same for a moment (its process exists before the
// task does), so callers act only on what two scans some time apart both
// report.
func (r *Runtime) Leftovers(ctx context.Context) ([]Leftover, error) {
	ctx = r.ctx(ctx)
	ctrs, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	withTask := map[string]bool{}
	for _, c := range ctrs {
		if _, err := c.Task(ctx, nil); err == nil {
			withTask[c.ID()] = true
		}
	}
	return classify(readProcs(), withTask, r.opts.Namespace, r.opts.Address), nil
}

// EndLeftover SIGKILLs a leftover process.
func EndLeftover(l Leftover) error {
	if err := syscall.Kill(l.Pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("kill %s %d (%s): %w", l.Kind, l.Pid, l.ID, err)
	}
	return nil
}

// classify finds the leftovers among procs: shims of this containerd
// address and namespace with no child process and no task for their id,
// and processes in a container cgroup (/<namespace>/<id>) whose id has no
// task.
func classify(procs []proc, withTask map[string]bool, namespace, address string) []Leftover {
	children := map[int]int{}
	for _, p := range procs {
		children[p.ppid]++
	}
	var out []Leftover
	for _, p := range procs {
		if len(p.args) > 0 && filepath.Base(p.args[0]) == "containerd-shim-runc-v2" {
			if flag(p.args, "-namespace") == namespace && flag(p.args, "-address") == address {
				if id := flag(p.args, "-id"); id != "" && children[p.pid] == 0 && !withTask[id] {
					out = append(out, Leftover{Pid: p.pid, Kind: "shim", ID: id})
				}
			}
			continue
		}
		if id := cgroupID(p.cgroup, namespace); id != "" && !withTask[id] {
			out = append(out, Leftover{Pid: p.pid, Kind: "process", ID: id})
		}
	}
	return out
}

// flag returns the value after name in args.
func flag(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

// cgroupID returns the container id of a /proc/<pid>/cgroup whose path
// is /<namespace>/<id> (containerd's default cgroupsPath), on cgroup v1
// or v2; "" otherwise.
func cgroupID(cgroup, namespace string) string {
	for _, line := range strings.Split(cgroup, "\n") {
		_, path, ok := strings.Cut(line, ":/")
		if !ok {
			continue
		}
		ns, id, ok := strings.Cut(path, "/")
		if ok && ns == namespace && id != "" && !strings.Contains(id, "/") {
			return id
		}
	}
	return ""
}

// readProcs reads every process's parent, command line and cgroup.
func readProcs() []proc {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	out := make([]proc, 0, len(dirs))
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		raw, _ := os.ReadFile(d + "/cmdline")
		cg, _ := os.ReadFile(d + "/cgroup")
		out = append(out, proc{pid: pid, ppid: ppid, args: strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"), cgroup: string(cg)})
	}
	return out
}
