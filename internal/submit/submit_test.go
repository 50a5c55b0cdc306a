package submit

import (
	"testing"

	"github.com/google/uuid"
)

// A part holding a NUL cannot pose as two parts: a structured CloudEvent
// on the invoke API whose source is "<trigger>\x00<source>" pre-claimed
// the id of the same event on that trigger's path (on the main of
// 2026-12-04 both were one id, and the real webhook got 409). Ids of
// inputs without NUL are unchanged.
func TestDerivedIDsDoNotCollide(t *testing.T) {
	t.Parallel()
	onTrigger := DeriveRequestID("cloudevents", "fn", "hook", "src", "id-1")
	forged := DeriveRequestID("cloudevents", "fn", "hook\x00src", "id-1")
	if onTrigger == forged {
		t.Fatalf("a NUL in a part collides: %s", forged)
	}
	if DeriveRequestID("a\x00", "b") == DeriveRequestID("a", "\x00b") {
		t.Error("length-prefixed parts collide")
	}
	if got, want := DeriveRequestID("timer", "f", "t", "1"), uuid.NewSHA1(namespaceUUID, []byte("timer\x00f\x00t\x001")).String(); got != want {
		t.Errorf("an id without NUL changed: %s, was %s", got, want)
	}
}
