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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/redisconn"
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
	// "base64" beside a field value that is not UTF-8 text.
	FieldsEncoding map[string]string `json:"fieldsEncoding,omitempty"`
}

// Source is one redis_stream trigger.
type Source struct {
	triggers.Lifecycle
	d        *triggers.Deliverer
	o        config.QueueTrigger
	rdb      redis.UniversalClient
	consumer string
	// ownFrom is where re-reading our own pending entries continues; ""
	// once they are done and new entries (">") are read.
	ownFrom     string
	lastReclaim time.Time
	groupReady  bool
}

var _ triggers.Source = (*Source)(nil)

// New builds the source; jobgate's own Redis is used unless the trigger
// names another (addr/url).
func New(d *triggers.Deliverer, o config.QueueTrigger, jobgateRedis redisconn.Target, node string) (*Source, error) {
	target := jobgateRedis
	switch {
	case o.URL != "":
		target = redisconn.Target{URL: o.URL}
	case o.Addr != "":
		target = redisconn.Target{Addr: o.Addr}
	}
	if o.PasswordEnv != "" {
		target.Password = os.Getenv(o.PasswordEnv)
	}
	rdb, err := target.Client()
	if err != nil {
		return nil, fmt.Errorf("redis_stream %s/%s: %w", d.Function, d.Trigger, err)
	}
	consumer := o.Consumer
	if consumer == "" {
		consumer = node // stable across restarts: our pending entries come back to us
	}
	s := &Source{d: d, o: o, rdb: rdb, consumer: consumer, ownFrom: "0"}
	s.Init(d, func(ctx context.Context) {
		d.Pump(ctx, s, o.Batch.Max, time.Duration(o.Batch.WaitMs)*time.Millisecond, s.SetHealth)
	}, s.rdb.Close)
	return s, nil
}

func (s *Source) ensureGroup(ctx context.Context) error {
	if s.groupReady {
		return nil
	}
	start := "$"
	if s.o.Start == "earliest" {
		start = "0"
	}
	err := s.rdb.XGroupCreateMkStream(ctx, s.o.Stream, s.o.Group, start).Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group %s on %s: %w", s.o.Group, s.o.Stream, err)
	}
	s.groupReady = true
	return nil
}

// Fetch reads our own pending entries first (left by a crash), then new
// ones; now and then it reclaims entries a dead consumer left pending.
func (s *Source) Fetch(ctx context.Context, max int, wait time.Duration) ([]triggers.Message, error) {
	if err := s.ensureGroup(ctx); err != nil {
		return nil, err
	}
	if s.ownFrom == "" && time.Since(s.lastReclaim) > reclaimIdle/2 {
		s.lastReclaim = time.Now()
		msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: s.o.Stream, Group: s.o.Group, Consumer: s.consumer,
			MinIdle: reclaimIdle, Start: "0-0", Count: int64(max)}).Result()
		if err == nil && len(msgs) > 0 {
			s.d.Log.Info().Int("entries", len(msgs)).Msg("reclaimed entries a dead consumer left pending")
			return s.messages(msgs), nil
		}
	}
	id, block := ">", wait
	if s.ownFrom != "" {
		id, block = s.ownFrom, -1
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: s.o.Group, Consumer: s.consumer,
		Streams: []string{s.o.Stream, id}, Count: int64(max), Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			s.groupReady = false
		}
		return nil, fmt.Errorf("XREADGROUP %s: %w", s.o.Stream, err)
	}
	var got []redis.XMessage
	for _, st := range res {
		got = append(got, st.Messages...)
	}
	if s.ownFrom != "" {
		if len(got) == 0 {
			s.ownFrom = ""
		} else {
			s.ownFrom = got[len(got)-1].ID
		}
	}
	return s.messages(got), nil
}

// Ack XACKs the entries.
func (s *Source) Ack(ctx context.Context, msgs []triggers.Message) error {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.Key
	}
	return s.rdb.XAck(ctx, s.o.Stream, s.o.Group, ids...).Err()
}

func (s *Source) messages(ms []redis.XMessage) []triggers.Message {
	out := make([]triggers.Message, len(ms))
	for i, m := range ms {
		raw := make(map[string][]byte, len(m.Values))
		for k, v := range m.Values {
			raw[k] = []byte(fmt.Sprint(v))
		}
		fields, enc := triggers.TextValues(raw)
		rec, _ := json.Marshal(Record{Stream: s.o.Stream, Group: s.o.Group, ID: m.ID, Fields: fields, FieldsEncoding: enc})
		out[i] = triggers.Message{Key: m.ID, Record: rec}
	}
	return out
}
