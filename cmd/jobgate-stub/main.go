// Command jobgate-stub is the first process of a provisioned instance
// (see worker/stub): it waits inside the job's container for the event,
// then execs the job's command. It must be static, since it runs in any
// image; jobgate carries a static build of it (worker/stub/stubbin) and
// writes it out at start, so no install step depends on how jobgate
// itself was built.
package main

import (
	"fmt"
	"os"

	"github.com/jobgate/jobgate/worker/stub"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != stub.Arg {
		fmt.Fprintf(os.Stderr, "usage: %s %s COMMAND [ARG...]\n(run inside a provisioned instance by jobgate's worker, not by hand)\n", os.Args[0], stub.Arg)
		os.Exit(2)
	}
	stub.Main(os.Args[2:])
}
