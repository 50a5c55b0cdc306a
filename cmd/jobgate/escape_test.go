package main

import "testing"

// A job's output cannot drive the operator's terminal through `jobgate
// logs` (on the main of 2026-12-04 it was printed raw): escape sequences
// and other controls are shown, tabs and text kept.
func TestEscapeControls(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"\x1b]0;pwned\x07title": `\x1b]0;pwned\x07title`,
		"\x1b[2J\x1b[Hclear":    `\x1b[2J\x1b[Hclear`,
		"a\tb événement ✓":      "a\tb événement ✓",
		"over\rwrite":           `over\x0dwrite`,
		"c1 \u009b31m csi":      `c1 \x9b31m csi`,
	} {
		if got := escapeControls(in); got != want {
			t.Errorf("escapeControls(%q) = %q, want %q", in, got, want)
		}
	}
}
