package worker

import (
	"math"
	"sort"
	"sync"
	"time"
)

// demandWindow is how far back adaptive warm pools look.
const demandWindow = time.Minute

// demand tracks each function's recent concurrency on this worker, for
// adaptive warm pools (worker.warm.auto): a pool is sized to the p90 of
// the per-second peak concurrency over the last minute, and drops to
// zero once a function has had no start for idle. Pure bookkeeping:
// the caller passes the time.
type demand struct {
	idle time.Duration

	mu  sync.Mutex
	fns map[string]*fnDemand
}

type fnDemand struct {
	running  int
	lastSeen time.Time // the last start
	// secs[s] is second s (Unix) of the window, for seconds with a change.
	secs map[int64]second
}

// second is one second's level before its first change, its highest
// concurrency and its level at its end.
type second struct{ start, peak, end int }

func newDemand(idle time.Duration) *demand {
	return &demand{idle: idle, fns: map[string]*fnDemand{}}
}

func (d *demand) get(fn string) *fnDemand {
	f := d.fns[fn]
	if f == nil {
		f = &fnDemand{secs: map[int64]second{}}
		d.fns[fn] = f
	}
	return f
}

// started records an instance of fn starting at now.
func (d *demand) started(fn string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.get(fn)
	f.running++
	f.lastSeen = now
	f.note(now, f.running-1)
}

// ended records an instance of fn ending at now.
func (d *demand) ended(fn string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.get(fn)
	before := f.running
	f.running = max(0, f.running-1)
	f.note(now, before)
}

// note keeps the second's peak and end level, and forgets seconds out
// of the window (and one before it, which carries its level in).
func (f *fnDemand) note(now time.Time, before int) {
	s := now.Unix()
	sec, ok := f.secs[s]
	if !ok {
		sec.start = before
	}
	f.secs[s] = second{start: sec.start, peak: max(sec.peak, f.running), end: f.running}
	for k := range f.secs {
		if k < s-int64(demandWindow/time.Second) {
			delete(f.secs, k)
		}
	}
}

// target is how many warm instances fn should have at now: 0 after idle
// without a start, else the p90 of the last minute's per-second peaks
// (a second without a change keeps the concurrency it ended with).
func (d *demand) target(fn string, now time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.fns[fn]
	if f == nil || f.lastSeen.IsZero() || now.Sub(f.lastSeen) >= d.idle {
		return 0
	}
	n := int(demandWindow / time.Second)
	samples := make([]int, n)
	first := now.Unix() - int64(n) + 1
	// A second without a change has the level the last change left; the
	// window starts at the level before its first change (the current
	// level if nothing changed in it).
	level := f.running
	for i := range samples {
		if sec, ok := f.secs[first+int64(i)]; ok {
			level = sec.start
			break
		}
	}
	for i := range samples {
		if sec, ok := f.secs[first+int64(i)]; ok {
			samples[i], level = sec.peak, sec.end
		} else {
			samples[i] = level
		}
	}
	sort.Ints(samples)
	return max(1, samples[int(math.Ceil(0.9*float64(n)))-1])
}

// forget drops functions no longer configured.
func (d *demand) forget(keep func(fn string) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for fn := range d.fns {
		if !keep(fn) {
			delete(d.fns, fn)
		}
	}
}
