package metrics_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/metrics"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

// Every metric the Grafana dashboard (deploy/grafana/jobgate.json) asks
// for is one jobgate exports, so the dashboard cannot silently go blank
// after a rename.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	m := metrics.New(rdb, "jobgate")
	// Vectors appear once they have a child: give each one.
	m.EventsIn.WithLabelValues("API", "f")
	m.ScheduleSeconds.WithLabelValues("f")
	m.Outcome("f", 200)
	m.Retries.WithLabelValues("f")
	m.DeadLettersDropped.WithLabelValues("f", "max")
	m.ImagePullSeconds.WithLabelValues("f")
	m.ImagePullFailures.WithLabelValues("f")
	m.TriggerMessages.WithLabelValues("f", "t")
	m.TriggerDelivery.WithLabelValues("f", "t")
	m.HTTPRequests.WithLabelValues("GET /healthz", "200")
	m.HTTPSeconds.WithLabelValues("GET /healthz")
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	raw, err := os.ReadFile("../../deploy/grafana/jobgate.json")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`jobgate_[a-z_]+`).FindAllString(string(raw), -1)
	if len(used) < 10 {
		t.Fatalf("the dashboard names only %d metrics", len(used))
	}
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !exported[base] {
			t.Errorf("the dashboard uses %s, which jobgate does not export", name)
		}
	}
	if !exported["jobgate_queue_tasks"] || !exported["jobgate_build_info"] {
		t.Fatalf("exported: %v", exported)
	}
}
