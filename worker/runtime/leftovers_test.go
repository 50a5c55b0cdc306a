package runtime

import (
	"reflect"
	"testing"
)

func TestClassifyLeftovers(t *testing.T) {
	const ns, addr = "jg", "/run/c.sock"
	shim := func(pid int, id, namespace, address string) proc {
		return proc{pid: pid, ppid: 1, args: []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", namespace, "-id", id, "-address", address}}
	}
	procs := []proc{
		shim(10, "anchor", ns, addr),    // has a task
		shim(11, "gone", ns, addr),      // no task, no child: leftover
		shim(12, "busy", ns, addr),      // no task for its id, but serves a child (grouped)
		shim(13, "gone", "other", addr), // another namespace
		shim(14, "gone", ns, "/other"),  // another containerd
		{pid: 20, ppid: 12, args: []string{"/bin/job"}, cgroup: "0::/jg/running\n"},                              // its task exists
		{pid: 21, ppid: 1, args: []string{"runc", "init"}, cgroup: "4:memory:/jg/cut-short\n0::/jg/cut-short\n"}, // no task: leftover
		{pid: 22, ppid: 1, args: []string{"redis-server"}, cgroup: "0::/system.slice/redis.service\n"},
		{pid: 23, ppid: 1, args: []string{"sh"}, cgroup: "0::/jgx/other\n"},
	}
	got := classify(procs, map[string]bool{"anchor": true, "running": true}, ns, addr)
	want := []Leftover{{Pid: 11, Kind: "shim", ID: "gone"}, {Pid: 21, Kind: "process", ID: "cut-short"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("leftovers %+v, want %+v", got, want)
	}
}

func TestCgroupID(t *testing.T) {
	for cg, want := range map[string]string{
		"0::/jg/abc\n":                          "abc",
		"9:name=systemd:/jg/abc\n1:cpu:/jg/abc": "abc",
		"0::/jg\n":                              "",
		"0::/jg/abc/nested\n":                   "",
		"0::/user.slice\n":                      "",
	} {
		if got := cgroupID(cg, "jg"); got != want {
			t.Errorf("cgroupID(%q) = %q, want %q", cg, got, want)
		}
	}
}
