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
