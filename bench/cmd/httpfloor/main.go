// Command httpfloor is the ingest benchmarks' HTTP floor, run as its own
// process as a gateway would be: the thinnest HTTP enqueue there is, a
// net/http handler that reads the body and does one asynq Enqueue of it.
// jobgate's ingest is compared against it (bench/ingest_test.go).
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/hibiken/asynq"
)

func main() {
	redisAddr := flag.String("redis", "", "Redis address")
	flag.Parse()
	aq := asynq.NewClient(asynq.RedisClientOpt{Addr: *redisAddr, PoolSize: 64})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("http://%s\n", ln.Addr())
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			_, err = aq.EnqueueContext(r.Context(), asynq.NewTask("bench", body), asynq.Queue("floor"))
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"Status":"PENDING"}`))
	}))
}
