package gateway

import (
	"errors"
	"io"
	"strings"
	"testing"

	"golang.org/x/sync/semaphore"
)

// The body budget is shared: what one request holds another cannot take,
// and it comes back when the request is answered.
func TestInflightBudget(t *testing.T) {
	t.Parallel()
	sem := semaphore.NewWeighted(10)
	a := &meteredBody{ReadCloser: io.NopCloser(strings.NewReader("123456")), sem: sem}
	if b, err := io.ReadAll(a); err != nil || string(b) != "123456" {
		t.Fatalf("a: %q %v", b, err)
	}
	b := &meteredBody{ReadCloser: io.NopCloser(strings.NewReader("abcdefgh")), sem: sem}
	if _, err := io.ReadAll(b); !errors.Is(err, errInflightFull) {
		t.Fatalf("b read past the budget: %v", err)
	}
	b.release()
	a.release()
	c := &meteredBody{ReadCloser: io.NopCloser(strings.NewReader("0123456789")), sem: sem}
	if got, err := io.ReadAll(c); err != nil || len(got) != 10 {
		t.Fatalf("the budget did not come back: %q %v", got, err)
	}
}
