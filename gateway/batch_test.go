package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/testkit/testenv"
)

type batchAnswer struct {
	RequestIds []string
	Duplicates int
}

// invoke-batch queues every event or none, answers the RequestIds in
// order, names a refused event's index, and replays by Idempotency-Key.
func TestInvokeBatch(t *testing.T) {
	t.Parallel()
	st := testenv.StartStack(t, config.Function{Name: "fn", Image: jobImage(t), Args: []string{"echo", "ran"}})
	path := "/v1/functions/fn/invoke-batch"
	queued := func() int {
		recs, _, err := st.Records.List(t.Context(), record.Filter{Function: "fn"}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}

	// Refused, nothing queued: a bad event (named by index), an oversize
	// one, not an array, empty, too many, wait modes, unknown function.
	big := `{"b":"` + strings.Repeat("x", 130<<10) + `"}`
	tooMany := "[" + strings.TrimSuffix(strings.Repeat("{},", 1001), ",") + "]"
	for _, c := range []struct {
		path, body string
		code       int
		index      int // -1: none
	}{
		{path, `[{"n":0},{"n":1},{"n":2},"x",{}]`, 400, 3},
		{path, `[{"n":0},` + big + `]`, 413, 1},
		{path, `{"n":0}`, 400, -1},
		{path, `[]`, 400, -1},
		{path, tooMany, 400, -1},
		{path + "?wait=scheduled", `[{}]`, 400, -1},
		{"/v1/functions/nope/invoke-batch", `[{}]`, 404, -1},
	} {
		code, body := st.Do(t, "POST", c.path, []byte(c.body), nil)
		var e struct {
			Error      struct{ Code, Message string }
			EventIndex *int
		}
		_ = json.Unmarshal(body, &e)
		if code != c.code || e.Error.Code == "" || (c.index >= 0) != (e.EventIndex != nil) || (e.EventIndex != nil && *e.EventIndex != c.index) {
			t.Errorf("%s %.60s: %d %.200s; want %d at index %d", c.path, c.body, code, body, c.code, c.index)
		}
	}
	if n := queued(); n != 0 {
		t.Fatalf("refused batches queued %d invocations", n)
	}

	// Accepted: every event queued, ids in order, each event stored as sent.
	const n = 8
	var events []string
	for i := range n {
		events = append(events, fmt.Sprintf(`{"n":%d}`, i))
	}
	body := []byte("[" + strings.Join(events, ",") + "]")
	hdr := map[string]string{"Idempotency-Key": "batch-1"}
	code, out := st.Do(t, "POST", path, body, hdr)
	var ans batchAnswer
	if err := json.Unmarshal(out, &ans); code != 202 || err != nil || len(ans.RequestIds) != n || ans.Duplicates != 0 {
		t.Fatalf("batch: %d %s", code, out)
	}
	for i, id := range ans.RequestIds {
		ev, err := st.Records.Event(t.Context(), id)
		if err != nil || string(ev) != events[i] {
			t.Fatalf("event %d (%s): %q %v", i, id, ev, err)
		}
	}
	// A replay answers the same ids and queues nothing; the key with
	// another body is refused.
	code, out = st.Do(t, "POST", path, body, hdr)
	var again batchAnswer
	if err := json.Unmarshal(out, &again); code != 202 || err != nil || fmt.Sprint(again.RequestIds) != fmt.Sprint(ans.RequestIds) || again.Duplicates != n {
		t.Fatalf("replay: %d %s", code, out)
	}
	if code, out := st.Do(t, "POST", path, []byte(`[{"other":1}]`), hdr); code != 409 || !strings.Contains(string(out), "IdempotencyKeyReused") {
		t.Fatalf("key reused: %d %s", code, out)
	}
	for _, id := range ans.RequestIds {
		if end := st.WaitEnd(t, id, 60*time.Second); end.Status != record.Finished {
			t.Fatalf("%s: %+v", id, end)
		}
	}
	if got := queued(); got != n {
		t.Fatalf("%d invocations, want %d", got, n)
	}
}
