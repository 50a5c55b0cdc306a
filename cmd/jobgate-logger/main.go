// Command jobgate-logger is the log driver containerd's shim runs beside
// every job (cio.BinaryIO). It is a separate, small binary because one
// runs per running instance: it starts in ~5 ms and holds a few MiB,
// where the full jobgate binary takes ~25 ms (package inits) and ~30 MiB.
// The jobgate binary still accepts the same arguments, as a fallback.
package main

import (
	"fmt"
	"os"

	"github.com/jobgate/jobgate/worker/logdriver"
)

func main() {
	if len(os.Args) < 3 || os.Args[1] != logdriver.Arg {
		fmt.Fprintf(os.Stderr, "usage: %s %s SETTINGS_FILE\n(run by containerd's shim for jobgate's worker, not by hand)\n", os.Args[0], logdriver.Arg)
		os.Exit(2)
	}
	logdriver.Main(os.Args[2:])
}
