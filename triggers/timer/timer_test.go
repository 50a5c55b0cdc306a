package timer_test

import (
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/schemas"
	"github.com/jobgate/jobgate/triggers/timer"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A timer every 2 s starts containers whose event is SCF's, byte for
// byte, with Time on the schedule.
func TestTimerEvery2sStartsContainers(t *testing.T) {
	s := testenv.Shared(t)
	ref := s.Registry + "/test/job:1"
	if _, err := testjob.Push(ref); err != nil {
		t.Fatal(err)
	}
	st := testenv.StartStack(t, config.Function{Name: "tick", Image: ref, Args: []string{"event"},
		Triggers: []config.Trigger{{Type: "timer", Name: "every-2s", Options: map[string]any{"cron": "*/2 * * * * * *", "message": "user msg"}}}})
	time.Sleep(7 * time.Second)
	if err := st.Node.Timers.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	recs, _, err := st.Records.List(t.Context(), record.Filter{Function: "tick"}, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 3 || len(recs) > 4 {
		t.Fatalf("%d fires in 7 s of a 2 s timer", len(recs))
	}
	var lateness []time.Duration
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
		want, _ := timer.Event("every-2s", "user msg", instant)
		if out[0] != string(want) || string(want) != `{"Type":"Timer","TriggerName":"every-2s","Time":"`+ev.Time+`","Message":"user msg"}` {
			t.Fatalf("event %s", out[0])
		}
		if r.RequestId != timer.RequestID("tick", "every-2s", instant) || r.RequestSource != "TRIGGER_TIMER" || r.TriggerName != "every-2s" {
			t.Fatalf("record %+v", r)
		}
		start, _ := time.Parse(record.TimeFormat, end.StartTime)
		lateness = append(lateness, start.Sub(instant))
	}
	sort.Slice(lateness, func(i, j int) bool { return lateness[i] < lateness[j] })
	t.Logf("fire lateness (scheduled instant → container started): %v", lateness)
	if lateness[len(lateness)-1] > 2*time.Second {
		t.Fatalf("late fires: %v", lateness)
	}
}
