// Package redisstream consumes a Redis stream through a consumer group
// (XREADGROUP), turns entries into {"Records":[{"RedisStream":{…}}]}
// events, and XACKs them only after the event is durably queued. Entries
// left pending by a dead consumer are reclaimed with XAUTOCLAIM.
package redisstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/triggers"
)

// reclaimIdle: entries pending this long on another consumer are taken.
const reclaimIdle = 60 * time.Second

// Record is the event element.
type Record struct {
	Stream string            `json:"stream"`
	Group  string            `json:"group"`
	ID     string            `json:"id"`
	Fields map[string]string `json:"fields"`
}

// Source is one redis_stream trigger.
type Source struct {
	d        *triggers.Deliverer
	o        config.QueueTrigger
	rdb      *redis.Client
	consumer string
	log      zerolog.Logger
	mu       sync.Mutex
	health   error // nil = connected
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

var _ triggers.Source = (*Source)(nil)

// New builds the source; jobgate's own Redis is used unless the trigger
// names another (addr/url).
func New(d *triggers.Deliverer, o config.QueueTrigger, jobgateRedis *redis.Options, node string) (*Source, error) {
	opt := *jobgateRedis
	switch {
	case o.URL != "":
		u, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("redis_stream %s/%s: %w", d.Function, d.Trigger, err)
		}
		opt = *u
	case o.Addr != "":
		opt = redis.Options{Addr: o.Addr}
	}
	if o.PasswordEnv != "" {
		opt.Password = os.Getenv(o.PasswordEnv)
	}
	consumer := o.Consumer
	if consumer == "" {
		consumer = node // stable across restarts: our pending entries come back to us
	}
	s := &Source{d: d, o: o, rdb: redis.NewClient(&opt), consumer: consumer,
		log: d.Log.With().Str("source", "redis_stream").Str("stream", o.Stream).Logger()}
	s.health = errors.New("not started")
	return s, nil
}

// Name is function/trigger.
func (s *Source) Name() string { return s.d.Function + "/" + s.d.Trigger }

// Health is nil while reads succeed.
func (s *Source) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

func (s *Source) setHealth(err error) {
	s.mu.Lock()
	s.health = err
	s.mu.Unlock()
}

// Start begins consuming.
func (s *Source) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(ctx)
	}()
	return nil
}

// Stop ends consuming; unacknowledged entries stay pending for the next
// start (or another consumer).
func (s *Source) Stop(ctx context.Context) error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	return s.rdb.Close()
}

func (s *Source) ensureGroup(ctx context.Context) error {
	start := "$"
	if s.o.Start == "earliest" {
		start = "0"
	}
	err := s.rdb.XGroupCreateMkStream(ctx, s.o.Stream, s.o.Group, start).Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group %s on %s: %w", s.o.Group, s.o.Stream, err)
	}
	return nil
}

func (s *Source) run(ctx context.Context) {
	backoff := func(err error, attempt int) {
		s.setHealth(err)
		s.log.Warn().Err(err).Msg("redis_stream: retrying")
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)):
		}
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if err := s.ensureGroup(ctx); err != nil {
			backoff(err, attempt)
			continue
		}
		break
	}
	var buf []triggers.Message
	var firstAt time.Time
	own := true // first our own pending entries (after a crash), then new ones
	lastReclaim := time.Time{}
	wait := time.Duration(s.o.Batch.WaitMs) * time.Millisecond
	for attempt := 0; ctx.Err() == nil; {
		if s.d.Backlogged() {
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		var got []redis.XMessage
		if own && len(buf) > 0 {
			// Re-reading "0" would return these same entries again.
		} else if time.Since(lastReclaim) > reclaimIdle/2 {
			lastReclaim = time.Now()
			msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: s.o.Stream, Group: s.o.Group, Consumer: s.consumer,
				MinIdle: reclaimIdle, Start: "0-0", Count: int64(s.o.Batch.Max)}).Result()
			if err == nil && len(msgs) > 0 {
				s.log.Info().Int("entries", len(msgs)).Msg("reclaimed entries of a dead consumer")
				got = msgs
			}
		}
		if len(got) == 0 && !(own && len(buf) > 0) {
			id, block := ">", wait
			if own {
				id, block = "0", -1
			}
			if len(buf) > 0 {
				block = max(time.Until(firstAt.Add(wait)), time.Millisecond)
			}
			res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: s.o.Group, Consumer: s.consumer,
				Streams: []string{s.o.Stream, id}, Count: int64(max(s.o.Batch.Max-len(buf), 1)), Block: block}).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				if ctx.Err() != nil {
					return
				}
				if strings.Contains(err.Error(), "NOGROUP") {
					_ = s.ensureGroup(ctx)
				}
				attempt++
				backoff(err, attempt)
				continue
			}
			s.setHealth(nil)
			attempt = 0
			for _, st := range res {
				got = append(got, st.Messages...)
			}
			if own && len(got) == 0 {
				own = false
			}
		}
		for _, m := range got {
			if len(buf) == 0 {
				firstAt = time.Now()
			}
			buf = append(buf, s.message(m))
		}
		// Deliver while a batch is full, or its wait has passed.
		for len(buf) > 0 && (len(buf) >= s.o.Batch.Max || time.Since(firstAt) >= wait || own) {
			n, err := s.d.Plan(ctx, buf, s.o.Batch.Max)
			if err != nil {
				backoff(err, 1)
				break
			}
			if n == 0 {
				break // a journaled batch wants more entries
			}
			if _, err := s.d.Deliver(ctx, buf[:n]); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff(err, 1) // not acknowledged: retried, never lost
				break
			}
			ids := make([]string, n)
			for i, m := range buf[:n] {
				ids[i] = m.Key
			}
			if err := s.rdb.XAck(ctx, s.o.Stream, s.o.Group, ids...).Err(); err != nil {
				s.log.Warn().Err(err).Msg("XACK failed; the entries will be redelivered (same RequestId)")
			}
			buf = buf[n:]
			firstAt = time.Now()
		}
	}
}

func (s *Source) message(m redis.XMessage) triggers.Message {
	fields := make(map[string]string, len(m.Values))
	for k, v := range m.Values {
		fields[k] = fmt.Sprint(v)
	}
	rec, _ := json.Marshal(Record{Stream: s.o.Stream, Group: s.o.Group, ID: m.ID, Fields: fields})
	return triggers.Message{Key: m.ID, Record: rec}
}
