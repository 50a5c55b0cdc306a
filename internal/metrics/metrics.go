// Package metrics holds jobgate's Prometheus collectors, on a registry of
// the process's own (no global state); the gateway serves it at /metrics,
// and a worker-only process at worker.listen.
package metrics

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/version"
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
	// Retries counts failed attempts queued again, by function.
	Retries *prometheus.CounterVec
	// DeadLettersDropped counts dead letters that left the list through
	// its bounds, by function and reason (retention, max).
	DeadLettersDropped *prometheus.CounterVec
	// ImagePullSeconds is resolving and (when needed) pulling an event's
	// image; ImagePullFailures the failed ones, by function.
	ImagePullSeconds  *prometheus.HistogramVec
	ImagePullFailures *prometheus.CounterVec
	// TriggerMessages counts broker messages queued and acknowledged;
	// TriggerDelivery is their fetch → acknowledgement time, by function
	// and trigger.
	TriggerMessages *prometheus.CounterVec
	TriggerDelivery *prometheus.HistogramVec
	// HTTPRequests counts the gateway's answers by route and code;
	// HTTPSeconds times them by route.
	HTTPRequests *prometheus.CounterVec
	HTTPSeconds  *prometheus.HistogramVec
}

// New registers the collectors; the queue's depth by state and the
// dead-letter count are read from Redis on each scrape.
func New(rdb redis.UniversalClient, prefix string) *Metrics {
	fnLabel := []string{"function"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		EventsIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_events_in_total",
			Help: "Events durably queued, by source and function."}, []string{"source", "function"}),
		ScheduleSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jobgate_schedule_seconds",
			Help: "Time from enqueue to container started.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}, fnLabel),
		Running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jobgate_instances_running",
			Help: "Instances this worker supervises."}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_outcomes_total",
			Help: "Ended attempts by function and SCF status code."}, []string{"function", "status_code"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_retries_total",
			Help: "Failed attempts queued again as a new attempt, by function."}, fnLabel),
		DeadLettersDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_deadletters_dropped_total",
			Help: "Dead letters dropped by the list's bounds (deadletter.retention_h, deadletter.max), by function and reason."}, []string{"function", "reason"}),
		ImagePullSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jobgate_image_pull_seconds",
			Help: "Resolving and, when not local, pulling an event's image.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, fnLabel),
		ImagePullFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_image_pull_failures_total",
			Help: "Image resolutions or pulls that failed (policy, registry, timeout), by function."}, fnLabel),
		TriggerMessages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_trigger_messages_total",
			Help: "Broker messages queued and acknowledged, by function and trigger."}, []string{"function", "trigger"}),
		TriggerDelivery: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jobgate_trigger_delivery_seconds",
			Help:    "Broker message fetch to acknowledgement (batch wait included), by function and trigger.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"function", "trigger"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobgate_http_requests_total",
			Help: "Gateway answers by route (pattern or trigger) and HTTP status code."}, []string{"route", "code"}),
		HTTPSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jobgate_http_request_seconds",
			Help: "Gateway answer time by route (log streams included).", Buckets: prometheus.DefBuckets}, []string{"route"}),
	}
	v := version.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "jobgate_build_info", Help: "1, labelled with the running build.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.GoVersion}})
	build.Set(1)
	keys := keyspace.New(prefix)
	dead := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jobgate_deadletters",
		Help: "Dead letters in the list (all functions)."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, _ := rdb.ZCard(ctx, keys.DeadLetters()).Result()
		return float64(n)
	})
	m.Registry.MustRegister(m.EventsIn, m.ScheduleSeconds, m.Running, m.Outcomes, m.Retries, m.DeadLettersDropped,
		m.ImagePullSeconds, m.ImagePullFailures, m.TriggerMessages, m.TriggerDelivery, m.HTTPRequests, m.HTTPSeconds,
		build, dead, &queueCollector{insp: asynq.NewInspectorFromRedisClient(rdb)},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Outcome counts one ended attempt (nil-safe).
func (m *Metrics) Outcome(function string, code int) {
	if m != nil {
		m.Outcomes.WithLabelValues(function, strconv.Itoa(code)).Inc()
	}
}

// queueCollector reports the asynq queue's tasks by state, through
// asynq's Inspector (not its private keys), on each scrape.
type queueCollector struct{ insp *asynq.Inspector }

var (
	queueTasks = prometheus.NewDesc("jobgate_queue_tasks", "Tasks in jobgate's asynq queue by state.", []string{"state"}, nil)
	queueUp    = prometheus.NewDesc("jobgate_queue_up", "1 when the queue's state could be read from Redis on this scrape, else 0 (and no jobgate_queue_tasks).", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueTasks; ch <- queueUp }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	queues, err := c.insp.Queues()
	info := &asynq.QueueInfo{} // nothing queued yet: asynq does not know the queue
	if err == nil && slices.Contains(queues, queue.Name) {
		info, err = c.insp.GetQueueInfo(queue.Name)
	}
	if err != nil {
		ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(queueUp, prometheus.GaugeValue, 1)
	for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
		"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
		ch <- prometheus.MustNewConstMetric(queueTasks, prometheus.GaugeValue, float64(n), state)
	}
}
