package jobenv

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckEnvEdges(t *testing.T) {
	t.Parallel()
	val := func(n int) string { return strings.Repeat("v", n) }
	key := "K="
	cases := []struct {
		name string
		env  []string
		ok   bool
	}{
		{"one string at 131071 bytes", []string{key + val(MaxString-len(key))}, true},
		{"one string at 131072 bytes", []string{key + val(MaxString-len(key)+1)}, false},
		{"total at 2 MiB", fill(MaxTotal), true},
		{"total at 2 MiB + 1", fill(MaxTotal + 1), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckEnv(c.env)
			var le *LimitError
			if c.ok != (err == nil) || (err != nil && !errors.As(err, &le)) {
				t.Fatalf("CheckEnv: %v", err)
			}
		})
	}
	if MaxEventBytes != 131071-len("SCF_CUSTOM_CONTAINER_EVENT=") {
		t.Fatalf("MaxEventBytes = %d", MaxEventBytes)
	}
}

// fill returns env strings whose sizes (with NULs) add up to total.
func fill(total int) []string {
	var env []string
	for total > 0 {
		n := min(total, 100_001) // string of n-1 bytes + NUL
		env = append(env, "A="+strings.Repeat("x", n-1-2))
		total -= n
	}
	return env
}

func TestBuildPrecedence(t *testing.T) {
	t.Parallel()
	env := Build(
		[]string{"PATH=/bin", "USER=root", "FROM_IMAGE=1", "BOTH=image"},
		map[string]string{"BOTH": "function", "FN": "2"},
		Builtins{FunctionName: "f", Region: "r", AppID: "a", UIN: "u", RequestID: "id", Attempt: 2},
		[]byte(`{"x":"é"}`))
	want := []string{
		"BOTH=function", "FN=2", "FROM_IMAGE=1", "JOBGATE_ATTEMPT=2", "JOBGATE_REQUEST_ID=id", "PATH=/bin",
		`SCF_CUSTOM_CONTAINER_EVENT={"x":"é"}`, "SCF_FUNCTIONNAME=f", "SCF_FUNCTIONVERSION=$LATEST",
		"TENCENTCLOUD_APPID=a", "TENCENTCLOUD_REGION=r", "TENCENTCLOUD_RUNENV=SCF", "TENCENTCLOUD_UIN=u",
		"USER=qcloud", "USER_CODE_ROOT=/var/user/",
	}
	if d := cmp.Diff(want, env); d != "" {
		t.Fatalf("(-want +got)\n%s", d)
	}
}
