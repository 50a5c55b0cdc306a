package timer_test

import (
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/jobgate/jobgate/cmd/jobgate/node"
	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers/timer"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A timer every 2 s starts containers whose event is SCF's, byte for
// byte, with Time on the schedule. The schedule runs on a fake clock: the
// test moves it over three instants and waits for their invocations.
func TestTimerEvery2sStartsContainers(t *testing.T) {
	t.Parallel()
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	// An odd second: the next instant of */2 is a second away.
	clock := clockwork.NewFakeClockAt(time.Now().UTC().Truncate(2 * time.Second).Add(time.Second))
	cfg := s.Config(t, testenv.Redis(t), config.Function{Name: "tick", Image: ref, Args: []string{"event"},
		Triggers: []config.Trigger{{Type: "timer", Name: "every-2s", Options: map[string]any{"cron": "*/2 * * * * * *", "message": "user msg"}}}})
	st := testenv.StartStackWith(t, s, cfg, node.Options{Clock: clock})
	var want []time.Time
	for i := 0; i < 3; i++ {
		if err := clock.BlockUntilContext(t.Context(), 1); err != nil { // the loop waits for its next instant
			t.Fatal(err)
		}
		clock.Advance(2 * time.Second)
		want = append(want, clock.Now().Truncate(2*time.Second))
	}
	var recs []*record.Record
	testenv.Eventually(t, 30*time.Second, "three timer invocations", func() bool {
		recs, _, _ = st.Records.List(t.Context(), record.Filter{Function: "tick"}, 100, "")
		return len(recs) >= 3
	})
	if err := st.Node.Timers.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("%d fires for three instants", len(recs))
	}
	var got []time.Time
	for _, r := range recs {
		end := st.WaitEnd(t, r.RequestId, 30*time.Second)
		out := st.Stdout(t, r.RequestId)
		if end.Status != record.Finished || len(out) != 1 {
			t.Fatalf("%+v %v", end, out)
		}
		var ev schemas.Timer
		if err := json.Unmarshal([]byte(out[0]), &ev); err != nil {
			t.Fatal(err)
		}
		instant, err := time.Parse(time.RFC3339, ev.Time)
		if err != nil || instant.Second()%2 != 0 || instant.Nanosecond() != 0 {
			t.Fatalf("Time %q", ev.Time)
		}
		wantEvent, _ := timer.Event("every-2s", "user msg", instant)
		if out[0] != string(wantEvent) || string(wantEvent) != `{"Type":"Timer","TriggerName":"every-2s","Time":"`+ev.Time+`","Message":"user msg"}` {
			t.Fatalf("event %s", out[0])
		}
		if r.RequestId != timer.RequestID("tick", "every-2s", instant) || r.RequestSource != "TRIGGER_TIMER" || r.TriggerName != "every-2s" {
			t.Fatalf("record %+v", r)
		}
		got = append(got, instant)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Before(got[j]) })
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Fatalf("fired instants %v, want %v", got, want)
		}
	}
}
