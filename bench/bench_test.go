// Package bench measures jobgate against baselines run in the same
// process on the same machine (this machine is noisy: ratios, not absolute
// times, are what count). Run with `task bench` (bash bench/run.sh), which
// prints the table and writes docs/BENCHMARKS.md, or one at a time:
//
//	go test -run '^$' -bench Ingest -benchtime 1x ./bench
//
// BENCH_SMOKE=1 runs every benchmark with tiny counts (a check that they
// work, not a measurement).
//
// The baselines talk to containerd and asynq directly; that is the point
// of them, and bench is the only place outside worker/runtime that
// imports containerd.
package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// smoke reports whether this is a smoke run (BENCH_SMOKE=1).
func smoke() bool { return os.Getenv("BENCH_SMOKE") == "1" }

// scale returns full, or small in a smoke run.
func scale(full, small int) int {
	if smoke() {
		return small
	}
	return full
}

func median(d []time.Duration) time.Duration { return percentile(d, 50) }

// percentile is the nearest-rank percentile p of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// row prints one line of the results table; bench/run.sh collects them.
// ratio is ours/baseline; met says whether the target holds.
func row(b *testing.B, name, ours, baseline string, ratio float64, target string, met bool) {
	b.Helper()
	verdict := "met"
	switch {
	case target == "—":
		verdict = "—"
	case !met:
		verdict = "NOT met"
	}
	r := "—"
	if !math.IsNaN(ratio) {
		r = fmt.Sprintf("%.2f×", ratio)
	}
	line := strings.Join([]string{"ROW", name, ours, baseline, r, target, verdict}, "|")
	fmt.Println(line)
	b.Log(line)
}

// nanRatio marks a row without a baseline.
var nanRatio = math.NaN()

// invokeNone posts event to fn with wait=none and decodes the record.
func invokeNone(c *http.Client, baseURL, fn string, event []byte) (*record.Record, error) {
	resp, err := c.Post(baseURL+"/v1/functions/"+fn+"/invoke?wait=none", "application/json", bytes.NewReader(event))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("invoke %s: HTTP %d: %s", fn, resp.StatusCode, body)
	}
	var rec record.Record
	if err := json.Unmarshal(body, &rec); err != nil {
		return nil, fmt.Errorf("invoke %s: %w", fn, err)
	}
	return &rec, nil
}

// startStack starts jobgate in-process for a benchmark, logging JSON to a
// file at info level as `jobgate serve` does to stderr (not to b.Log, whose
// buffering would be a cost production does not have).
func startStack(b *testing.B, s *testenv.Services, cfg *config.Config, role string) *testenv.Stack {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "jobgate.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	log := zerolog.New(f).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	return testenv.StartStackLogged(b, s, cfg, node.Options{Role: role, Logger: log})
}
