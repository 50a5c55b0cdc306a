// Command samplejob is the job body of the README's sample functions: it
// prints what SCF gives a job image — the event and the built-in
// variables — and exits 0. Its arguments make the other samples:
//
//	sleep DURATION   run that long first (terminate and timeouts can be tried)
//	fail CODE        end with that exit code (FAILED, retries, dead letters)
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	exit := 0
	for i := 1; i+1 < len(os.Args); i += 2 {
		switch os.Args[i] {
		case "sleep":
			d, err := time.ParseDuration(os.Args[i+1])
			if err != nil {
				fmt.Fprintln(os.Stderr, "sleep:", err)
				os.Exit(2)
			}
			fmt.Printf("sleeping %s\n", d)
			time.Sleep(d)
		case "fail":
			exit, _ = strconv.Atoi(os.Args[i+1])
		}
	}
	fmt.Printf("hello from %s (request %s, attempt %s)\n",
		os.Getenv("SCF_FUNCTIONNAME"), os.Getenv("JOBGATE_REQUEST_ID"), os.Getenv("JOBGATE_ATTEMPT"))
	for _, k := range []string{"TENCENTCLOUD_RUNENV", "SCF_FUNCTIONVERSION", "TENCENTCLOUD_REGION", "TENCENTCLOUD_APPID", "TENCENTCLOUD_UIN", "GREETING"} {
		fmt.Printf("%s=%s\n", k, os.Getenv(k))
	}
	// Its network (network: bridge, the default): its own address on the
	// worker's bridge and the nameservers jobgate gave it.
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			fmt.Printf("network: address %s\n", n)
		}
	}
	if rc, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		for _, l := range strings.Split(string(rc), "\n") {
			if strings.HasPrefix(l, "nameserver ") {
				fmt.Printf("network: %s\n", l)
			}
		}
	}
	raw := os.Getenv("SCF_CUSTOM_CONTAINER_EVENT")
	var event map[string]any
	if err := json.Unmarshal([]byte(raw), &event); err != nil {
		fmt.Fprintf(os.Stderr, "event is not a JSON object: %v\n", err)
		os.Exit(1)
	}
	pretty, _ := json.MarshalIndent(event, "", "  ")
	fmt.Printf("event (%d bytes):\n%s\n", len(raw), pretty)
	fmt.Fprintln(os.Stderr, "this line went to stderr")
	if exit != 0 {
		fmt.Fprintf(os.Stderr, "failing with exit code %d, as asked\n", exit)
		os.Exit(exit)
	}
}
