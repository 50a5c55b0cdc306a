package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

var seeds = []string{
	`{}`, ` {"a":1} `, `{"a":"\u00e9\n","b":[1,2.5e-3,true,false,null]}`, `{"a":1,"a":2}`, "{\"a\":\"\xff\xfe\"}",
	`[]`, `[{}, {"a":[{}]} ,{"b":"]"}]`, `[1]`, `[{},1]`, `"s"`, `1`, `null`,
	``, ` `, `{`, `{"a"}`, `{"a":01}`, `{"a":1,}`, `[{},]`, `{} {}`, `{}x`, "{\"a\":\"\x01\"}", `{"a":"\x"}`,
	`{"a":1e}`, `{"a":-}`, `{'a':1}`, `[{}`, "\t\r\n{}\n", `{"a":"\ud800"}`,
}

// FuzzValid: jsonobj accepts exactly what encoding/json accepts, and a
// batch's elements are the array's elements.
func FuzzValid(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", b, got, want)
		}
		trimmed := bytes.TrimLeft(b, " \t\r\n")
		if got, want := IsObject(b), json.Valid(b) && len(trimmed) > 0 && trimmed[0] == '{'; got != want {
			t.Fatalf("IsObject(%q) = %v, want %v", b, got, want)
		}
		var raw []json.RawMessage
		stdErr := json.Unmarshal(b, &raw)
		objs, err := Objects(b)
		var ie *IndexError
		switch {
		case stdErr != nil || raw == nil: // encoding/json reads null as no slice
			if !errors.Is(err, ErrNotArray) {
				t.Fatalf("Objects(%q) = %v, want ErrNotArray (encoding/json: %v)", b, err, stdErr)
			}
		case errors.As(err, &ie):
			if e := raw[ie.Index]; len(e) > 0 && e[0] == '{' {
				t.Fatalf("Objects(%q): element %d (%s) is an object", b, ie.Index, e)
			}
		case err != nil:
			t.Fatalf("Objects(%q): %v, encoding/json read %d elements", b, err, len(raw))
		default:
			if len(objs) != len(raw) {
				t.Fatalf("Objects(%q): %d elements, encoding/json %d", b, len(objs), len(raw))
			}
			for i := range raw {
				if !bytes.Equal(objs[i], raw[i]) || raw[i][0] != '{' {
					t.Fatalf("Objects(%q)[%d] = %q, encoding/json %q", b, i, objs[i], raw[i])
				}
			}
		}
	})
}

func TestObjectsNamesTheBadElement(t *testing.T) {
	t.Parallel()
	_, err := Objects([]byte(`[{}, {"a":1}, [], {}]`))
	var ie *IndexError
	if !errors.As(err, &ie) || ie.Index != 2 {
		t.Fatalf("err = %v, want element 2", err)
	}
	if _, err := Objects([]byte(`{"a":1}`)); !errors.Is(err, ErrNotArray) {
		t.Fatalf("an object: err = %v, want ErrNotArray", err)
	}
}
