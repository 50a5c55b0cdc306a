package runtime

import (
	"errors"
	"testing"
)

// What runc says about the function's process is the function's fault
// (445, not retried); what the shim or containerd says is the platform's
// (retried, never the job's attempt). The strings are the ones seen on
// this machine kind (containerd 1.6, runc 1.1).
func TestInitErrorBlamesTheRightSide(t *testing.T) {
	t.Parallel()
	cases := []struct {
		msg  string
		want error
	}{
		{`failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/no/such/binary": stat /no/such/binary: no such file or directory: unknown`, ErrInit},
		{`OCI runtime create failed: runc create failed: unable to start container process: exec: "/etc": permission denied: unknown`, ErrInit},
		{`exec: "job": executable file not found in $PATH`, ErrInit},
		{`failed to start shim: start failed: dial unix /run/containerd/s/4f1c…: connect: no such file or directory: unknown`, ErrRuntimeFailed},
		{`ttrpc: closed: unknown`, ErrRuntimeFailed},
		{`rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing dial unix /tmp/c.sock: connect: connection refused"`, ErrRuntimeFailed},
	}
	for _, c := range cases {
		if got := initError("create task", "x", errors.New(c.msg)); !errors.Is(got, c.want) {
			t.Errorf("%s\n  classified %v, want %v", c.msg, got, c.want)
		}
	}
}

// Only containerd's own leftover bundle of this namespace and id is
// recognised (it is then removed, so nothing else may match).
func TestStaleBundleIsRecognisedNarrowly(t *testing.T) {
	t.Parallel()
	msg := "failed to create shim task: failed to start shim: mkdir /tmp/jgt-1/state/io.containerd.runtime.v2.task/jgt-ns/7e18: file exists: unknown"
	if dir, ok := staleBundle(errors.New(msg), "jgt-ns", "7e18"); !ok || dir != "/tmp/jgt-1/state/io.containerd.runtime.v2.task/jgt-ns/7e18" {
		t.Fatalf("not recognised: %q %v", dir, ok)
	}
	for _, c := range []struct{ msg, ns, id string }{
		{msg, "other-ns", "7e18"},
		{msg, "jgt-ns", "other-id"},
		{"mkdir /etc/jgt-ns/7e18: file exists", "jgt-ns", "7e18"},
		{"mkdir /tmp/x/io.containerd.runtime.v2.task/jgt-ns/7e18: permission denied", "jgt-ns", "7e18"},
	} {
		if dir, ok := staleBundle(errors.New(c.msg), c.ns, c.id); ok {
			t.Errorf("%q (%s/%s) taken for a stale bundle: %s", c.msg, c.ns, c.id, dir)
		}
	}
}
