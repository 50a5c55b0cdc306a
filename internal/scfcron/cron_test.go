package scfcron

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNextInstants(t *testing.T) {
	t.Parallel()
	sh := mustLoc(t, "Asia/Shanghai")
	utc := time.UTC
	at := func(loc *time.Location, s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04:05", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name, expr string
		loc        *time.Location
		from       string
		want       []string // in loc
	}{
		{"every 5 s (SCF sample)", "*/5 * * * * * *", utc, "2026-01-01 00:00:03", []string{"2026-01-01 00:00:05", "2026-01-01 00:00:10"}},
		{"02:00 on the 1st", "0 0 2 1 * * *", utc, "2026-01-15 00:00:00", []string{"2026-02-01 02:00:00", "2026-03-01 02:00:00"}},
		{"weekdays 10:15 by name", "0 15 10 * * MON-FRI *", utc, "2026-11-27 11:00:00", []string{"2026-11-30 10:15:00", "2026-12-01 10:15:00"}},
		{"week 0 is Sunday", "0 0 12 * * 0 *", utc, "2026-11-27 00:00:00", []string{"2026-11-29 12:00:00"}},
		{"month names", "0 0 0 1 JAN,JUL * *", utc, "2026-02-01 00:00:00", []string{"2026-07-01 00:00:00", "2027-01-01 00:00:00"}},
		{"5-field legacy", "30 9 * * *", utc, "2026-01-01 10:00:00", []string{"2026-01-02 09:30:00"}},
		{"1/10 minutes = 1, 11, 21", "0 1/10 * * * * *", utc, "2026-01-01 00:00:00", []string{"2026-01-01 00:01:00", "2026-01-01 00:11:00", "2026-01-01 00:21:00"}},
		{"day OR week when both restricted", "0 0 0 13 * FRI *", utc, "2026-11-01 00:00:00", []string{"2026-11-06 00:00:00", "2026-11-13 00:00:00", "2026-11-20 00:00:00"}},
		{"year field", "0 0 0 1 1 * 2028", utc, "2026-06-01 00:00:00", []string{"2028-01-01 00:00:00"}},
		{"year range with step", "0 0 0 1 1 * 2030-2040/5", utc, "2026-06-01 00:00:00", []string{"2030-01-01 00:00:00", "2035-01-01 00:00:00", "2040-01-01 00:00:00"}},
		{"zone: 09:00 in Shanghai", "0 0 9 * * * *", sh, "2026-01-01 10:00:00", []string{"2026-01-02 09:00:00"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse(c.expr, c.loc)
			if err != nil {
				t.Fatal(err)
			}
			cur := at(c.loc, c.from)
			for _, w := range c.want {
				cur = s.Next(cur)
				if got := cur.In(c.loc).Format("2006-01-02 15:04:05"); got != w {
					t.Fatalf("next = %s, want %s", got, w)
				}
			}
		})
	}
}

func TestYearRunsOut(t *testing.T) {
	t.Parallel()
	s, err := Parse("0 0 0 1 1 * 2027", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Next(time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)); !n.IsZero() {
		t.Fatalf("after the last year: %v", n)
	}
}

// DST follows robfig/cron: a time skipped by the spring-forward jump does
// not fire that day, and a wall-clock time in the repeated hour fires
// twice (two distinct instants, an hour apart — two events).
func TestDST(t *testing.T) {
	t.Parallel()
	ny := mustLoc(t, "America/New_York")
	s, err := Parse("0 30 2 * * * *", ny)
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-08: 02:00 → 03:00 in New York; 02:30 does not exist.
	n := s.Next(time.Date(2026, 3, 8, 0, 0, 0, 0, ny))
	if got := n.In(ny).Format("2006-01-02 15:04"); got != "2026-03-09 02:30" {
		t.Fatalf("spring forward: %s", got)
	}
	// 2026-11-01: 01:00–02:00 happens twice; 01:30 fires once.
	s2, _ := Parse("0 30 1 * * * *", ny)
	first := s2.Next(time.Date(2026, 11, 1, 0, 0, 0, 0, ny))
	second := s2.Next(first)
	if first.In(ny).Format("01-02 15:04 MST") != "11-01 01:30 EDT" || second.In(ny).Format("01-02 15:04 MST") != "11-01 01:30 EST" || second.Sub(first) != time.Hour {
		t.Fatalf("fall back: %v then %v", first.In(ny), second.In(ny))
	}
}

func TestBadExpressionsNameTheField(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"0 61 * * * * *":   `field minute "61"`,
		"0 0 25 * * * *":   `field hour "25"`,
		"0 0 0 32 * * *":   `field day "32"`,
		"0 0 0 * 13 * *":   `field month "13"`,
		"0 0 0 * * 7 *":    `field week "7"`,
		"0 0 0 * * MOO *":  `field week "MOO"`,
		"0 0 0 * * * 1969": `field year "1969"`,
		"0 0 0 * * * 2100": `field year "2100"`,
		"* * * * * *":      "6 fields",
		"61 * * * *":       `field minute "61"`,
		"0 0 0 L * * *":    `field day "L"`,
	}
	for expr, want := range cases {
		_, err := Parse(expr, time.UTC)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), expr) {
			t.Errorf("%q: %v (want %q and the expression)", expr, err, want)
		}
	}
}
