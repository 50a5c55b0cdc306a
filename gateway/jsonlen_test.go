package gateway

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzJSONStringLen: the estimate is exactly what encoding/json makes of
// a valid UTF-8 body, and never below it otherwise.
func FuzzJSONStringLen(f *testing.F) {
	for _, s := range []string{"", "<&>", "a\"b\\c\n\t\x01", "\u2028x\u2029", "\xff\xfe", "événement"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got := jsonStringLen(body)
		b, _ := json.Marshal(string(body))
		if jsonValidUTF8(body) && got != len(b) {
			t.Fatalf("estimate %d, encoding/json made %d for %q", got, len(b), body)
		}
	})
}

func jsonValidUTF8(b []byte) bool { return utf8.Valid(b) }
