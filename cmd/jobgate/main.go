// Command jobgate runs SCF-style job image functions: `jobgate serve` runs
// the gateway and worker; the other subcommands talk to a running gateway.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // timers and config zones work in a minimal image

	ctdlog "github.com/containerd/log"

	"github.com/jobgate/jobgate/worker/logdriver"
	"github.com/jobgate/jobgate/worker/stub"
)

const usage = `usage: jobgate <command> [flags]

commands:
  serve      run the gateway and worker (--role gateway|worker to split)
  validate   check a config file
  invoke     invoke a function: invoke FN [--event FILE|-] [--wait none|scheduled]
  status     show an invocation record: status ID
  ls         list invocations, newest first
  logs       print an invocation's log: logs [-f] [--attempt N] ID
  terminate  stop an invocation: terminate ID [--grace]
  deadletters  the dead-letter list: deadletters ls|show ID|redrive ID|purge ID
  pull       pull and unpack an image into the worker's containerd, with progress: pull IMAGE
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == logdriver.Arg {
		// Re-executed by containerd's shim as a job's log driver.
		logdriver.Main(os.Args[2:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == stub.Arg {
		// Inside a provisioned instance, when jobgate is the log driver.
		stub.Main(os.Args[2:])
	}
	// containerd's client logs through logrus; only its warnings matter.
	_ = ctdlog.SetLevel("warn")
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"serve": serve, "validate": validate, "invoke": invoke, "status": status, "ls": list, "logs": logs,
		"terminate": terminate, "deadletters": deadletters, "pull": pull,
	}
	run, ok := cmds[os.Args[1]]
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			fmt.Print(usage)
			return
		}
		fmt.Fprintf(os.Stderr, "jobgate: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "jobgate:", err)
		os.Exit(1)
	}
}
