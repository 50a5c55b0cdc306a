// Package scfcron parses SCF's timer cron syntax (seven fields with a
// year, or the legacy five) onto robfig/cron's schedules.
package scfcron

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// SCF's two syntaxes: seven fields, or the legacy five.
var (
	fields7 = []string{"second", "minute", "hour", "day", "month", "week", "year"}
	fields5 = []string{"minute", "hour", "day", "month", "week"}
)

const minYear, maxYear = 1970, 2099

var parser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Schedule is a parsed SCF cron expression in a time zone.
type Schedule struct {
	expr  string
	inner cron.Schedule
	years map[int]bool // nil: every year
}

// Parse reads an SCF cron expression: `second minute hour day month week
// year` or `minute hour day month week`. Week is 0–6 or SUN–SAT (0 =
// Sunday), month 1–12 or JAN–DEC, year 1970–2099; `, - * /` everywhere;
// when day and week are both restricted either may match.
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	f := strings.Fields(expr)
	var names []string
	var six, year string
	switch len(f) {
	case 7:
		names, six, year = fields7, strings.Join(f[:6], " "), f[6]
	case 5:
		names, six, year = fields5, "0 "+strings.Join(f, " "), "*"
	default:
		return nil, fmt.Errorf("cron %q: %d fields; SCF wants 7 (second minute hour day month week year) or 5 (minute hour day month week)", expr, len(f))
	}
	sched, err := parser.Parse(six)
	if err != nil {
		// Name the field: the first one whose replacement by * parses.
		off := 0
		if len(f) == 5 {
			off = 1
		}
		g := strings.Fields(six)
		for i := range g {
			try := append(append([]string{}, g[:i]...), "*")
			try = append(try, g[i+1:]...)
			if _, e := parser.Parse(strings.Join(try, " ")); e == nil {
				return nil, fmt.Errorf("cron %q: field %s %q: %v", expr, names[i-off], g[i], err)
			}
		}
		return nil, fmt.Errorf("cron %q: %v", expr, err)
	}
	spec := sched.(*cron.SpecSchedule)
	spec.Location = loc
	years, err := parseYears(year)
	if err != nil {
		return nil, fmt.Errorf("cron %q: field year %q: %v", expr, year, err)
	}
	return &Schedule{expr: expr, inner: spec, years: years}, nil
}

// String returns the expression.
func (s *Schedule) String() string { return s.expr }

// Next returns the first instant after t, or the zero time when there is
// none (the year field has run out).
func (s *Schedule) Next(t time.Time) time.Time {
	loc := s.inner.(*cron.SpecSchedule).Location
	for i := 0; i < 2*(maxYear-minYear); i++ {
		n := s.inner.Next(t)
		if n.IsZero() || s.years == nil || s.years[n.Year()] {
			return n
		}
		y := n.Year() + 1
		for y <= maxYear && !s.years[y] {
			y++
		}
		if y > maxYear {
			return time.Time{}
		}
		t = time.Date(y, 1, 1, 0, 0, 0, 0, loc).Add(-time.Second)
	}
	return time.Time{}
}

// parseYears reads the year field; nil means every year.
func parseYears(field string) (map[int]bool, error) {
	if field == "*" || field == "?" {
		return nil, nil
	}
	set := map[int]bool{}
	for _, part := range strings.Split(field, ",") {
		rng, stepS, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepS)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("bad step %q", stepS)
			}
			step = n
		}
		lo, hi := minYear, maxYear
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err1, err2 error
			lo, err1 = strconv.Atoi(a)
			hi, err2 = strconv.Atoi(b)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad range %q", rng)
			}
		default:
			n, err := strconv.Atoi(rng)
			if err != nil {
				return nil, fmt.Errorf("not a year: %q", rng)
			}
			lo = n
			if !hasStep {
				hi = n
			}
		}
		if lo < minYear || hi > maxYear || lo > hi {
			return nil, fmt.Errorf("years must be within %d-%d: %q", minYear, maxYear, part)
		}
		for y := lo; y <= hi; y += step {
			set[y] = true
		}
	}
	return set, nil
}
