// Command jobgate runs SCF-style job image functions: `jobgate serve` runs
// the gateway and worker; the other subcommands talk to a running gateway.
package main

import (
	"context"
	"os"
	_ "time/tzdata" // timers and config zones work in a minimal image

	ctdlog "github.com/containerd/log"

	"github.com/jobgate/jobgate/worker/logdriver"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == logdriver.Arg {
		// Re-executed by containerd's shim as a job's log driver.
		logdriver.Main(os.Args[2:])
		return
	}
	// containerd's client logs through logrus; only its warnings matter.
	_ = ctdlog.SetLevel("warn")
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
