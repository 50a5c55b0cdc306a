// Command loadgen is the ingest benchmarks' load generator, run as its own
// process so that its CPU is not the server's (bench/ingest_test.go). It
// POSTs one body to a URL from keep-alive clients, in a closed loop (-n
// requests as fast as -clients allow) or an open loop (-rate per second
// for -d, latency measured from each request's due time), and prints one
// JSON result line.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Requests  int
	Seconds   float64
	PerSecond float64
	P50Ms     float64
	P99Ms     float64
	Errors    int
	FirstErr  string `json:",omitempty"`
}

func main() {
	url := flag.String("url", "", "where to POST")
	token := flag.String("token", "", "bearer token")
	bodyPath := flag.String("body", "", "file holding the request body")
	clients := flag.Int("clients", 32, "concurrent keep-alive clients (closed loop)")
	n := flag.Int("n", 1000, "requests (closed loop)")
	rate := flag.Float64("rate", 0, "requests per second (open loop; 0 = closed loop)")
	d := flag.Duration("d", 5*time.Second, "open loop duration")
	want := flag.Int("status", http.StatusAccepted, "the expected HTTP status")
	flag.Parse()
	body, err := os.ReadFile(*bodyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}, Timeout: time.Minute}
	var errs atomic.Int64
	var firstErr atomic.Value
	send := func() {
		req, _ := http.NewRequest("POST", *url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if *token != "" {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != *want {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
		}
		if err != nil {
			errs.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
		}
	}
	var lat []time.Duration
	t0 := time.Now()
	if *rate <= 0 {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range *clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(*n) {
					send()
				}
			}()
		}
		wg.Wait()
	} else {
		interval := time.Duration(float64(time.Second) / *rate)
		*n = int(*d / interval)
		lat = make([]time.Duration, *n)
		var wg sync.WaitGroup
		for i := range *n {
			due := t0.Add(time.Duration(i) * interval)
			time.Sleep(time.Until(due))
			wg.Add(1)
			go func() {
				defer wg.Done()
				send()
				lat[i] = time.Since(due)
			}()
		}
		wg.Wait()
	}
	secs := time.Since(t0).Seconds()
	r := result{Requests: *n, Seconds: secs, PerSecond: float64(*n) / secs, Errors: int(errs.Load())}
	if s, ok := firstErr.Load().(string); ok {
		r.FirstErr = s
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		pct := func(p float64) float64 {
			return float64(lat[min(len(lat)-1, int(p/100*float64(len(lat))))].Microseconds()) / 1000
		}
		r.P50Ms, r.P99Ms = pct(50), pct(99)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}
