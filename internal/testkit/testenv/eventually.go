package testenv

import (
	"fmt"
	"testing"
	"time"
)

// Eventually waits until cond holds, checking every 20 ms, and fails the
// test (naming what it waited for) if it does not within d. It is the
// one way tests wait for a condition: never a fixed sleep.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := poll(d, cond); err != nil {
		t.Fatalf("waited %s for %s: %v", d, what, err)
	}
}

// EventuallyNoError is Eventually for a check that says why it is not
// there yet; the last reason is in the failure.
func EventuallyNoError(t testing.TB, d time.Duration, what string, check func() error) {
	t.Helper()
	var last error
	if err := poll(d, func() bool { last = check(); return last == nil }); err != nil {
		t.Fatalf("waited %s for %s: %v (last: %v)", d, what, err, last)
	}
}

func poll(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not true yet")
		}
		<-tick.C
	}
	return nil
}
