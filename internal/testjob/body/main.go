// Command body is a scriptable job for jobgate's tests: its arguments are
// a little program run in order, e.g. `echo hi stderr oops exit 3`.
//
//	event          print SCF_CUSTOM_CONTAINER_EVENT as one line
//	eventsum       print "len=<n> sha256=<hex>" of the event
//	env NAME       print NAME=<value> (or NAME unset)
//	envsum         print "envtotal=<bytes>" (all KEY=value strings + NULs)
//	args           print os.Args[1:] as JSON
//	echo TEXT      print TEXT to stdout
//	stderr TEXT    print TEXT to stderr
//	lines N        print N numbered lines
//	sleep DUR      sleep (Go duration)
//	exit N         exit with code N
//
// With no arguments it prints the event.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"event"}
	}
	next := func(i *int) string {
		*i++
		if *i >= len(args) {
			fmt.Fprintln(os.Stderr, "body: missing operand")
			os.Exit(2)
		}
		return args[*i]
	}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "event":
			fmt.Println(os.Getenv("SCF_CUSTOM_CONTAINER_EVENT"))
		case "eventsum":
			e := os.Getenv("SCF_CUSTOM_CONTAINER_EVENT")
			fmt.Printf("len=%d sha256=%x\n", len(e), sha256.Sum256([]byte(e)))
		case "env":
			n := next(&i)
			if v, ok := os.LookupEnv(n); ok {
				fmt.Printf("%s=%s\n", n, v)
			} else {
				fmt.Printf("%s unset\n", n)
			}
		case "envsum":
			total := 0
			for _, kv := range os.Environ() {
				total += len(kv) + 1
			}
			fmt.Printf("envtotal=%d\n", total)
		case "args":
			b, _ := json.Marshal(os.Args[1:])
			fmt.Println(string(b))
		case "echo":
			fmt.Println(next(&i))
		case "stderr":
			fmt.Fprintln(os.Stderr, next(&i))
		case "lines":
			n, _ := strconv.Atoi(next(&i))
			for j := 1; j <= n; j++ {
				fmt.Printf("line %d\n", j)
			}
		case "sleep":
			d, err := time.ParseDuration(next(&i))
			if err != nil {
				fmt.Fprintln(os.Stderr, "body:", err)
				os.Exit(2)
			}
			time.Sleep(d)
		case "exit":
			n, _ := strconv.Atoi(next(&i))
			os.Exit(n)
		default:
			fmt.Fprintf(os.Stderr, "body: unknown op %q\n", args[i])
			os.Exit(2)
		}
	}
}
