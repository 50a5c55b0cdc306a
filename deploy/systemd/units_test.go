package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsVerify runs systemd-analyze verify on every unit (the
// template as instance "n1"), with the jobgate binary path pointed at an
// executable that exists here. Unknown keys, bad values and missing
// sections are printed, not failed, by systemd-analyze: any output fails.
func TestUnitsVerify(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	units, err := filepath.Glob("*.service")
	if err != nil || len(units) == 0 {
		t.Fatalf("no units: %v", err)
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/usr/local/bin/jobgate", "/bin/true")
		if !strings.Contains(text, "ExecReload=") || !strings.Contains(text, "StateDirectory=") {
			t.Errorf("%s: no ExecReload or StateDirectory", u)
		}
		name := strings.Replace(u, "@.service", "@n1.service", 1)
		if strings.Contains(u, "@") && !strings.Contains(text, "JOBGATE_NODE=%i") {
			t.Errorf("%s: the instance name is not the node name", u)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
