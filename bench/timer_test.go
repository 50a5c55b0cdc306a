package bench

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
	"github.com/jobgate/jobgate/schemas"

	"encoding/json"
)

// BenchmarkTimerLateness: an every-second timer for 30 fires; lateness is
// scheduled instant → container started (StartTime), median and p99.
func BenchmarkTimerLateness(b *testing.B) {
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		st := testenv.StartStack(b, config.Function{Name: "tick", Image: ref, Args: []string{"event"},
			Triggers: []config.Trigger{{Type: "timer", Name: "sec", Options: map[string]any{"cron": "* * * * * * *"}}}})
		time.Sleep(time.Duration(scale(31, 3)) * time.Second)
		_ = st.Node.Timers.Stop(b.Context())
		recs, _, err := st.Records.List(b.Context(), record.Filter{Function: "tick"}, 100, "")
		if err != nil {
			b.Fatal(err)
		}
		var late []time.Duration
		for _, r := range recs {
			end := st.WaitEnd(b, r.RequestId, time.Minute)
			ev, _ := st.Records.Event(b.Context(), r.RequestId)
			var te schemas.Timer
			_ = json.Unmarshal(ev, &te)
			instant, _ := time.Parse(time.RFC3339, te.Time)
			start, _ := time.Parse(record.TimeFormat, end.StartTime)
			late = append(late, start.Sub(instant))
		}
		sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
		med, p99 := late[len(late)/2], late[(len(late)*99)/100]
		row(b, fmt.Sprintf("timer lateness: scheduled instant → container started, every-second timer, %d fires", len(late)),
			fmt.Sprintf("median %s, p99 %s", ms(med), ms(p99)), "—", nanRatio, "—", true)
		b.Logf("%d fires: lateness median %v, p99 %v, max %v", len(late), med, p99, late[len(late)-1])
	}
}
