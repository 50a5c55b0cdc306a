package gateway

import (
	"fmt"
	"testing"
	"time"
)

// IPv6 clients are limited by /64 (on the main of 2026-12-04 by /128: a
// host with a /64 had 2^64 buckets), and the limiter's map is bounded.
func TestRateLimitKeys(t *testing.T) {
	t.Parallel()
	if a, b := clientNet("2001:db8:1:2::1"), clientNet("2001:db8:1:2:ffff::9"); a != b || a != "2001:db8:1:2::/64" {
		t.Errorf("one /64: %s %s", a, b)
	}
	if a, b := clientNet("2001:db8:1:2::1"), clientNet("2001:db8:1:3::1"); a == b {
		t.Errorf("two /64s share %s", a)
	}
	if got := clientNet("192.0.2.7"); got != "192.0.2.7" {
		t.Errorf("IPv4: %s", got)
	}
	l := newLimiter(1, 1)
	l.max = 10
	now := time.Unix(0, 0)
	for i := 0; i < 1000; i++ {
		l.allow(fmt.Sprintf("ip:2001:db8:%x::/64", i), now)
	}
	if n := len(l.by); n > 11 {
		t.Errorf("%d buckets for 1000 clients, want ≤ 11 (10 and the overflow)", n)
	}
	if ok, _ := l.allow("ip:2001:db8:ffff::/64", now); ok {
		t.Error("the overflow bucket, spent by the flood, let a new client through")
	}
}
