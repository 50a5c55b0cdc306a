// Package sources builds the message-queue trigger adapters of a config.
package sources

import (
	"context"
	"fmt"
	"time"

	"github.com/jobgate/jobgate/internal/metrics"
	"github.com/jobgate/jobgate/internal/redisconn"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/deadletter"
	"github.com/jobgate/jobgate/triggers"
	amqpsrc "github.com/jobgate/jobgate/triggers/amqp"
	"github.com/jobgate/jobgate/triggers/kafka"
	"github.com/jobgate/jobgate/triggers/natsjs"
	"github.com/jobgate/jobgate/triggers/redisstream"
)

// Deps are what every source needs.
type Deps struct {
	Config      *config.Config
	Sink        triggers.Sink
	DeadLetters *deadletter.Store
	Redis       redis.UniversalClient // jobgate's
	RedisTarget redisconn.Target      // how to reach it (a redis_stream trigger's own client)
	Logger      zerolog.Logger
	Metrics     *metrics.Metrics // nil: none
}

// IsQueue reports whether a trigger type is a message-queue source.
func IsQueue(typ string) bool {
	switch typ {
	case config.TriggerKafka, config.TriggerNATS, config.TriggerAMQP, config.TriggerRedisStream:
		return true
	}
	return false
}

// Build makes one source per message-queue trigger of the config.
func Build(d Deps) ([]triggers.Source, error) {
	var out []triggers.Source
	for _, fn := range d.Config.Functions {
		for _, tr := range fn.Triggers {
			if !IsQueue(tr.Type) {
				continue
			}
			src, err := One(d, fn.Name, tr)
			if err != nil {
				return nil, err
			}
			out = append(out, src)
		}
	}
	return out, nil
}

// One makes the source of one trigger of function fn.
func One(d Deps, fn string, tr config.Trigger) (triggers.Source, error) {
	o := tr.Queue()
	del := &triggers.Deliverer{
		Function: fn, Trigger: tr.Name, Sink: d.Sink, DeadLetters: d.DeadLetters, Redis: d.Redis,
		Prefix: d.Config.Redis.KeyPrefix(), Retention: d.Config.Retention(), MaxPending: o.MaxPending,
		Log:     d.Logger.With().Str("component", "trigger").Str("function", fn).Str("trigger", tr.Name).Logger(),
		Metrics: d.Metrics,
	}
	switch tr.Type {
	case config.TriggerRedisStream:
		del.Kind, del.Source = "RedisStream", "TRIGGER_REDIS_STREAM"
		return redisstream.New(del, o, d.RedisTarget, d.Config.Worker.Node)
	case config.TriggerKafka:
		del.Kind, del.Source = "Ckafka", "TRIGGER_CKAFKA"
		return kafka.New(del, o)
	case config.TriggerAMQP:
		del.Kind, del.Source = "Amqp", "TRIGGER_AMQP"
		return amqpsrc.New(del, o)
	case config.TriggerNATS:
		del.Kind, del.Source = "Nats", "TRIGGER_NATS"
		return natsjs.New(del, o)
	}
	return nil, fmt.Errorf("%s/%s: %s triggers are not built yet", fn, tr.Name, tr.Type)
}

// Start starts every source.
func Start(ctx context.Context, srcs []triggers.Source) error {
	for _, s := range srcs {
		if err := s.Start(ctx); err != nil {
			return fmt.Errorf("start trigger %s: %w", s.Name(), err)
		}
	}
	return nil
}

// Stop stops every source; unacknowledged messages stay with the broker.
func Stop(ctx context.Context, srcs []triggers.Source) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, s := range srcs {
		if err := s.Stop(ctx); err != nil {
			return fmt.Errorf("stop trigger %s: %w", s.Name(), err)
		}
	}
	return nil
}
