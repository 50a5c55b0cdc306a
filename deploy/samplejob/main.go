// Command samplejob is the job body of the README's sample function: it
// prints what SCF gives a job image — the event and the built-in
// variables — and exits 0.
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	fmt.Printf("hello from %s (request %s, attempt %s)\n",
		os.Getenv("SCF_FUNCTIONNAME"), os.Getenv("JOBGATE_REQUEST_ID"), os.Getenv("JOBGATE_ATTEMPT"))
	for _, k := range []string{"TENCENTCLOUD_RUNENV", "SCF_FUNCTIONVERSION", "TENCENTCLOUD_REGION", "TENCENTCLOUD_APPID", "TENCENTCLOUD_UIN", "GREETING"} {
		fmt.Printf("%s=%s\n", k, os.Getenv(k))
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
}
