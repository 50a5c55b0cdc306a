package runtime

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// staleBundleErr matches containerd's failure to make a task's bundle
// directory because one is left over.
var staleBundleErr = regexp.MustCompile(`mkdir (\S+): file exists`)

// staleBundle returns the leftover bundle directory a NewTask failure
// names, if the error is that and the directory is the one of this
// namespace and id (containerd's runtime v2 state: …/io.containerd.runtime.v2.task/<ns>/<id>).
// A worker killed while containerd was creating a task can leave it:
// containerd 1.6 removes it only when it restarts, and until then every
// create of that id fails.
func staleBundle(err error, ns, id string) (string, bool) {
	m := staleBundleErr.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	dir := filepath.Clean(m[1])
	if filepath.Base(dir) != id || filepath.Base(filepath.Dir(dir)) != ns ||
		filepath.Base(filepath.Dir(filepath.Dir(dir))) != "io.containerd.runtime.v2.task" {
		return "", false
	}
	return dir, true
}

// clearStaleBundle ends a leftover shim of the bundle (its task never
// registered, so its process never started), unmounts its rootfs and
// removes it.
func clearStaleBundle(dir, ns, id string) error {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-runc-v2") || !hasArg(args, "-namespace", ns) || !hasArg(args, "-id", id) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = syscall.Unmount(filepath.Join(dir, "rootfs"), syscall.MNT_DETACH)
	return os.RemoveAll(dir)
}

func hasArg(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}
