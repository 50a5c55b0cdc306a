// Package metrics holds jobgate's Prometheus collectors, on a registry of
// the process's own (no global state); the gateway serves it at /metrics.
package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
)

// Metrics are the collectors.
type Metrics struct {
	Registry *prometheus.Registry
	// EventsIn counts events queued, by source (API, TRIGGER_TIMER, ...) and function.
	EventsIn *prometheus.CounterVec
	// ScheduleSeconds is enqueue → container started.
	ScheduleSeconds *prometheus.HistogramVec
	// Running is the instances this worker supervises.
	Running prometheus.Gauge
	// Outcomes counts ended attempts by function and SCF status code.
	Outcomes *prometheus.CounterVec
	// DeadLettersDropped counts dead letters that left the list through
	// its bounds, by function and reason (retention, max).
	DeadLettersDropped *prometheus.CounterVec
}

// New registers the collectors; queue depth is read from Redis on scrape.
func New(rdb redis.UniversalClient) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		EventsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_events_in_total",
			Help: "Events durably queued, by source and function."}, []string{"source", "function"}),
		ScheduleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jobgate_schedule_seconds",
			Help: "Time from enqueue to container started.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, []string{"function"}),
		Running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jobgate_instances_running",
			Help: "Instances this worker supervises."}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_outcomes_total",
			Help: "Ended attempts by function and SCF status code."}, []string{"function", "status_code"}),
		DeadLettersDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_deadletters_dropped_total",
			Help: "Dead letters dropped by the list's bounds (deadletter.retention_h, deadletter.max), by function and reason."}, []string{"function", "reason"}),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jobgate_queue_pending",
		Help: "Tasks waiting in the asynq queue."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := rdb.LLen(ctx, keyspace.AsynqPending(queue.Name)).Result()
		if err != nil {
			return -1
		}
		return float64(n)
	})
	m.Registry.MustRegister(m.EventsIn, m.ScheduleSeconds, m.Running, m.Outcomes, m.DeadLettersDropped, depth,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Outcome counts one ended attempt (nil-safe).
func (m *Metrics) Outcome(function string, code int) {
	if m != nil {
		m.Outcomes.WithLabelValues(function, strconv.Itoa(code)).Inc()
	}
}
