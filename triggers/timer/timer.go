// Package timer runs SCF timer triggers on the gateway role. Every
// scheduled instant becomes one event whose RequestId is derived from
// (function, trigger, instant), so any number of gateway replicas firing
// the same instant enqueue it once. Missed instants (no gateway ran, or
// Redis was down) are caught up per the trigger's catchup setting.
package timer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/scfcron"
	"github.com/jobgate/jobgate/internal/startstop"
	"github.com/jobgate/jobgate/internal/submit"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers"
)

// maxCatchup bounds the instants one catch-up fires.
const maxCatchup = 1000

// Timers runs every timer trigger of a config.
type Timers struct {
	cfg   *config.Config
	sink  triggers.Sink
	rdb   redis.UniversalClient
	log   zerolog.Logger
	clock clockwork.Clock // the fire schedule runs on it (a fake in tests)
	group *startstop.Group
	specs []spec
}

type spec struct {
	function, trigger string
	opts              config.TimerTrigger
	sched             *scfcron.Schedule
}

// Source is the RequestSource of timer events (SCF's DLQ Body.RequestSource).
const Source = "TRIGGER_TIMER"

// New prepares the timers (the config has been validated). clock is the
// real one (clockwork.NewRealClock) outside tests.
func New(cfg *config.Config, sink triggers.Sink, rdb redis.UniversalClient, log zerolog.Logger, clock clockwork.Clock) (*Timers, error) {
	t := &Timers{cfg: cfg, sink: sink, rdb: rdb, log: log.With().Str("component", "timer").Logger(), clock: clock}
	for _, fn := range cfg.Functions {
		for _, tr := range fn.Triggers {
			if tr.Type != config.TriggerTimer {
				continue
			}
			o := tr.Timer()
			if o.Enabled != nil && !*o.Enabled {
				continue
			}
			zone := o.Timezone
			if zone == "" {
				zone = cfg.Timezone
			}
			loc, err := time.LoadLocation(zone)
			if err != nil {
				return nil, fmt.Errorf("timer %s/%s: %w", fn.Name, tr.Name, err)
			}
			s, err := scfcron.Parse(o.Cron, loc)
			if err != nil {
				return nil, fmt.Errorf("timer %s/%s: %w", fn.Name, tr.Name, err)
			}
			t.specs = append(t.specs, spec{function: fn.Name, trigger: tr.Name, opts: o, sched: s})
		}
	}
	return t, nil
}

// Start runs one loop per trigger.
func (t *Timers) Start(ctx context.Context) error {
	t.group = startstop.Start(ctx)
	for _, s := range t.specs {
		t.group.Go(func(ctx context.Context) { t.run(ctx, s) })
	}
	if len(t.specs) > 0 {
		t.log.Info().Int("timers", len(t.specs)).Msg("timers started")
	}
	return nil
}

// Stop ends the loops (fires in flight are abandoned; the next start's
// catch-up and the deterministic RequestIds make that safe).
func (t *Timers) Stop(ctx context.Context) error { return t.group.Stop(ctx) }

// Event returns the SCF timer event for one instant.
func Event(trigger, message string, instant time.Time) ([]byte, error) {
	return json.Marshal(schemas.Timer{Type: "Timer", TriggerName: trigger, Time: instant.UTC().Format("2006-01-02T15:04:05Z"), Message: message})
}

// RequestID is the invocation id of one instant of one trigger.
func RequestID(function, trigger string, instant time.Time) string {
	return submit.DeriveRequestID("timer", function, trigger, strconv.FormatInt(instant.Unix(), 10))
}

func (t *Timers) lastKey(s spec) string {
	return keyspace.New(t.cfg.Redis.KeyPrefix()).TimerLast(s.function, s.trigger)
}

func (t *Timers) run(ctx context.Context, s spec) {
	log := t.log.With().Str("function", s.function).Str("trigger", s.trigger).Str("cron", s.sched.String()).Logger()
	window := time.Duration(s.opts.CatchupWindowS) * time.Second
	now := t.clock.Now()
	t.catchUp(ctx, s, now, window, log)
	next := s.sched.Next(now)
	for !next.IsZero() {
		select {
		case <-ctx.Done():
			return
		case <-t.clock.After(next.Sub(t.clock.Now())):
		}
		instant := next
		t.group.Go(func(ctx context.Context) { t.fire(ctx, s, instant, window, log) })
		next = s.sched.Next(instant)
	}
	log.Info().Msg("schedule has no further instants (year field); timer ends")
}

// catchUp fires instants missed since the last recorded fire, per the
// trigger's catchup setting, within the window.
func (t *Timers) catchUp(ctx context.Context, s spec, now time.Time, window time.Duration, log zerolog.Logger) {
	if s.opts.Catchup == "none" {
		return
	}
	lastS, err := t.rdb.Get(ctx, t.lastKey(s)).Result()
	if err != nil {
		return // never fired, or Redis down (then fires retry anyway)
	}
	lastUnix, _ := strconv.ParseInt(lastS, 10, 64)
	from := time.Unix(lastUnix, 0)
	if bound := now.Add(-window); from.Before(bound) {
		from = bound
	}
	var missed []time.Time
	for n := s.sched.Next(from); !n.IsZero() && !n.After(now) && len(missed) < maxCatchup; n = s.sched.Next(n) {
		missed = append(missed, n)
	}
	if len(missed) == 0 {
		return
	}
	if s.opts.Catchup == "last" {
		missed = missed[len(missed)-1:]
	}
	log.Info().Int("instants", len(missed)).Str("catchup", s.opts.Catchup).Msg("catching up missed instants")
	for _, m := range missed {
		t.fire(ctx, s, m, window, log)
	}
}

// fire enqueues one instant, retrying while Redis refuses, until it lands
// or the instant is older than the window.
func (t *Timers) fire(ctx context.Context, s spec, instant time.Time, window time.Duration, log zerolog.Logger) {
	event, err := Event(s.trigger, s.opts.Message, instant)
	if err != nil {
		log.Error().Err(err).Msg("timer event")
		return
	}
	id := RequestID(s.function, s.trigger, instant)
	log = log.With().Str("request_id", id).Time("instant", instant).Logger()
	for attempt := 0; ; attempt++ {
		res, err := t.sink.Submit(ctx, submit.Request{
			Function: s.function, Event: event, RequestID: id, Source: Source, TriggerName: s.trigger,
		})
		if err == nil {
			_ = keyspace.TimerSetLast.Run(ctx, t.rdb, []string{t.lastKey(s)}, instant.Unix()).Err()
			if !res.Duplicate {
				log.Info().Dur("lateness", t.clock.Since(instant)).Msg("timer fired")
			}
			return
		}
		if !errors.Is(err, submit.ErrUnavailable) || t.clock.Since(instant) > window {
			log.Error().Err(err).Int("attempts", attempt+1).Msg("timer instant NOT fired (gave up)")
			return
		}
		if attempt == 0 {
			log.Warn().Err(err).Msg("timer fire failed; retrying")
		}
		select {
		case <-ctx.Done():
			log.Warn().Msg("timer instant not fired: shutting down (a replica or the next start's catch-up may fire it)")
			return
		case <-t.clock.After(min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)):
		}
	}
}
