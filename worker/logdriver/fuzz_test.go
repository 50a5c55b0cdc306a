package logdriver

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jobgate/jobgate/internal/logstore"
)

// FuzzScan: the splitter loses and adds nothing — joining each line's
// pieces (partial ones, then the last) gives the input's lines back —
// and, for UTF-8 input, every piece is valid UTF-8.
func FuzzScan(f *testing.F) {
	// Pieces of 16 bytes (bufio's least): short inputs split often.
	for _, seed := range []string{"a\nb\n", "no newline", "\n\n", strings.Repeat("ab✓", 10) + "\nend\n", "\xff\xfe\n", strings.Repeat("é", 16),
		"0123456789abcdef", "0123456789abcde✓x\n"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := make(chan logstore.Line, len(in)+2)
		scanSized(strings.NewReader(in), "stdout", out, 16)
		close(out)
		var pieces []logstore.Line
		for l := range out {
			pieces = append(pieces, l)
		}
		var got []string
		var cur strings.Builder
		for _, p := range pieces {
			if utf8.ValidString(in) && !utf8.ValidString(p.Line) {
				t.Fatalf("a piece of UTF-8 input is not UTF-8: %q", p.Line)
			}
			cur.WriteString(p.Line)
			if !p.Partial {
				got = append(got, cur.String())
				cur.Reset()
			}
		}
		if cur.Len() > 0 {
			t.Fatalf("input ended on a partial piece")
		}
		want := strings.Split(strings.TrimSuffix(in, "\n"), "\n")
		if in == "" {
			want = nil
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") || len(got) != len(want) {
			t.Fatalf("lines %q, want %q", got, want)
		}
	})
}
