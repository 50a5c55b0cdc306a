package logdriver

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jobgate/jobgate/internal/logstore"
)

func scanAll(in string) []logstore.Line {
	out := make(chan logstore.Line, 1024)
	scan(strings.NewReader(in), "stdout", out)
	close(out)
	var lines []logstore.Line
	for l := range out {
		lines = append(lines, l)
	}
	return lines
}

// A line over maxLine is cut on character boundaries: every piece is
// valid UTF-8, every piece but the last is partial, and the pieces join
// back to the line byte for byte.
func TestLongLinesSplitOnCharacterBoundaries(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("ab✓", 100<<10/5)         // 100 KiB, a 3-byte character every 5 bytes
	for _, offset := range []string{"", "x", "xy"} { // the cut falls on every byte of ✓
		line := offset + long
		lines := scanAll(line + "\nshort\n")
		var joined bytes.Buffer
		i := 0
		for ; i < len(lines) && lines[i].Partial; i++ {
			joined.WriteString(lines[i].Line)
		}
		if i == 0 || i >= len(lines)-1 {
			t.Fatalf("offset %q: %d pieces, %d partial: want the long line in several pieces, then the short one", offset, len(lines), i)
		}
		joined.WriteString(lines[i].Line)
		for _, l := range lines[:i+1] {
			if !utf8.ValidString(l.Line) {
				t.Fatalf("offset %q: a piece is not valid UTF-8 (cut inside a character)", offset)
			}
		}
		if joined.String() != line {
			t.Fatalf("offset %q: joined pieces are %d bytes, the line %d", offset, joined.Len(), len(line))
		}
		if last := lines[len(lines)-1]; last.Line != "short" || last.Partial {
			t.Fatalf("offset %q: last line %+v", offset, last)
		}
	}
}

// Short lines, a last line without a newline, and bytes that are not
// UTF-8 pass as they are.
func TestShortLines(t *testing.T) {
	t.Parallel()
	lines := scanAll("one\n\ntwo")
	if len(lines) != 3 || lines[0].Line != "one" || lines[1].Line != "" || lines[2].Line != "two" {
		t.Fatalf("%+v", lines)
	}
	for _, l := range lines {
		if l.Partial {
			t.Fatalf("partial short line %+v", l)
		}
	}
	if got := lastCharBoundary([]byte{'a', 0xff, 0xfe}); got != 3 {
		t.Fatalf("non-UTF-8 bytes: cut at %d, want 3", got)
	}
}

// A line of exactly a multiple of the piece size with no newline at the
// end still ends with a final (not partial) piece (fuzz finding).
func TestLineEndingOnAPieceBoundaryIsClosed(t *testing.T) {
	t.Parallel()
	lines := scanAll(strings.Repeat("é", maxLine)) // 2 × maxLine bytes
	if n := len(lines); n < 2 || lines[n-1].Partial || !lines[n-2].Partial {
		t.Fatalf("%d pieces, last partial %v", n, n > 0 && lines[n-1].Partial)
	}
}
