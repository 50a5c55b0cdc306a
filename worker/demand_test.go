package worker

import (
	"testing"
	"time"
)

// The adaptive pool size follows the last minute's p90 concurrency,
// keeps one while a function is in use, and decays to zero after idle.
func TestDemandTarget(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

	d := newDemand(5 * time.Minute)
	if n := d.target("f", t0); n != 0 {
		t.Fatalf("no traffic: %d", n)
	}
	// 1 event/s, each running 300 ms, for a minute: concurrency 1.
	for i := range 60 {
		d.started("f", at(float64(i)))
		d.ended("f", at(float64(i)+0.3))
	}
	if n := d.target("f", at(60)); n != 1 {
		t.Fatalf("steady 1/s: %d, want 1", n)
	}
	// Then 4 at a time for the next 30 s: half the minute at 4.
	for i := 0; i < 30; i += 2 {
		for range 4 {
			d.started("f", at(float64(60+i)))
		}
		for range 4 {
			d.ended("f", at(float64(60+i)+1.9))
		}
	}
	if n := d.target("f", at(90)); n != 4 {
		t.Fatalf("4 at a time for half the minute: %d, want 4", n)
	}
	// A long-running job keeps its level between events.
	d2 := newDemand(5 * time.Minute)
	for range 3 {
		d2.started("g", at(0))
	}
	if n := d2.target("g", at(59)); n != 3 {
		t.Fatalf("3 running for a minute: %d, want 3", n)
	}
	// ... also once the second they started in is out of the window.
	d2.started("g", at(100))
	d2.ended("g", at(100.5))
	if n := d2.target("g", at(200)); n != 3 {
		t.Fatalf("3 running for minutes: %d, want 3", n)
	}
	// Quiet for a while: the floor is 1 until idle, then 0.
	if n := d.target("f", at(200)); n != 1 {
		t.Fatalf("quiet but within idle: %d, want 1", n)
	}
	if n := d.target("f", at(90+300)); n != 0 {
		t.Fatalf("idle: %d, want 0", n)
	}
	d.forget(func(string) bool { return false })
	if len(d.fns) != 0 {
		t.Fatal("forget kept a function")
	}
}
