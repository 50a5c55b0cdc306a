package scfcron

import (
	"testing"
	"time"
)

// FuzzParse: any expression either fails to parse with an error or gives
// a schedule whose next instant is after the start (or none), never a
// panic or a loop.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"0 */5 * * * * *", "0 0 2 1 * * *", "*/2 * * * * * *", "0 0 0 29 2 * 2028", "0 0 12 ? * MON-FRI *",
		"0 0 0 1 1 * 2099-2100", "0 0 0 1 1 * 1970/7", "60 * * * * * *", "* * * * *", "", "0 0 0 31 2 * *", "0 0 0 L * * *"} {
		f.Add(seed)
	}
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := Parse(expr, time.UTC)
		if err != nil {
			if s != nil {
				t.Fatalf("%q: a schedule and an error", expr)
			}
			return
		}
		n := s.Next(start)
		if !n.IsZero() && !n.After(start) {
			t.Fatalf("%q: next %s is not after %s", expr, n, start)
		}
	})
}
