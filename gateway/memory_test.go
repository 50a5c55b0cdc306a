package gateway_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// heapBytes is the heap's object bytes (live and not yet swept).
func heapBytes() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// peakDuring samples the heap every 5 ms while load runs and returns the
// peak above the level before it.
func peakDuring(load func()) int64 {
	runtime.GC()
	base := heapBytes()
	var peak int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		load()
	}()
	for {
		if h := heapBytes() - base; h > peak {
			peak = h
		}
		select {
		case <-done:
			return peak
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Unauthenticated senders cannot drive the gateway's memory (measured on
// the main of 2026-12-04: 200 connections declaring 6 MiB and sending a
// byte raised the heap by 1.2 GiB; eight 6 MiB bodies of '<' peaked at
// 973 MiB). Not parallel: the heap is the process's.
func TestUnauthenticatedSendersBoundMemory(t *testing.T) {
	t.Setenv("HOOK_SECRET", "s3cret")
	fn := config.Function{Name: "big", Image: jobImage(t), LargeEvents: "file", MaxEventMB: 6, Triggers: []config.Trigger{
		{Type: "http", Name: "signed", Options: map[string]any{"path": "/hooks/signed",
			"auth": map[string]any{"hmac_sha256": map[string]any{"header": "X-Hub-Signature-256", "secret_env": "HOOK_SECRET", "scheme": "github"}}}},
		{Type: "http", Name: "open", Options: map[string]any{"path": "/hooks/open"}},
	}}
	st := testenv.StartStack(t, fn)
	addr := strings.TrimPrefix(st.URL, "http://")

	// 200 connections, a forged signature of the right form, 6 MiB
	// declared, one byte sent.
	const conns = 200
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	before := runtime.NumGoroutine()
	slow := peakDuring(func() {
		for i := 0; i < conns; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			held = append(held, c)
			fmt.Fprintf(c, "POST /hooks/signed HTTP/1.1\r\nHost: %s\r\nX-Hub-Signature-256: sha256=%s\r\nContent-Length: %d\r\n\r\n<", addr, strings.Repeat("ab", 32), 6<<20)
		}
		// Every connection is being read by the server.
		testenv.Eventually(t, 30*time.Second, "the server to read every connection", func() bool {
			return runtime.NumGoroutine() >= before+conns
		})
		time.Sleep(200 * time.Millisecond) // a sampling window with all of them open (the assertion is on memory, not time)
	})
	t.Logf("200 slow senders: heap +%d MiB", slow>>20)
	if slow > 64<<20 {
		t.Errorf("200 slow senders raised the heap by %d MiB, want ≤ 64 MiB", slow>>20)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil

	// Eight 6 MiB bodies of '<' at once to the open trigger: each would
	// make a 36 MiB event, and is refused before it is built.
	body := bytes.Repeat([]byte("<"), 6<<20-1024)
	codes := make([]int, 8)
	big := peakDuring(func() {
		var wg sync.WaitGroup
		for i := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Post(st.URL+"/hooks/open", "text/plain", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				codes[i] = resp.StatusCode
			}()
		}
		wg.Wait()
	})
	t.Logf("8 × 6 MiB of '<': heap +%d MiB, answers %v", big>>20, codes)
	for _, c := range codes {
		if c != http.StatusRequestEntityTooLarge {
			t.Errorf("answers %v, want 413 each", codes)
			break
		}
	}
	// The bodies themselves are 48 MiB, read by the server and sent from
	// this process: what is left for the gateway's own work is bounded.
	if big > 256<<20 {
		t.Errorf("8 × 6 MiB bodies raised the heap by %d MiB, want ≤ 256 MiB", big>>20)
	}
}
