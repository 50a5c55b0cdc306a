// Package jobenv builds a job instance's environment (docs/OPERATIONS.md, "What a job sees") and
// checks it against the limits Linux enforces at execve time.
//
// Linux refuses one argument or environment string of MAX_ARG_STRLEN
// (131072) bytes or more, counting its NUL, so "KEY=value" may be at most
// 131071 bytes. The whole of argv+envp must fit in a quarter of
// RLIMIT_STACK; the worker raises RLIMIT_STACK so that SCF's 2 MiB total
// really starts. Both limits surface only after Start succeeds (the process
// dies with exit 1), so they are checked here, before anything runs.
package jobenv

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

const (
	// MaxString is the largest "KEY=value" (or argument) in bytes, without
	// its NUL: MAX_ARG_STRLEN (32 pages = 131072) minus one.
	MaxString = 131071
	// MaxTotal bounds all env strings together, NULs included (SCF: 2 MiB).
	MaxTotal = 2 << 20

	// EventVar carries the event, byte for byte (SCF).
	EventVar = "SCF_CUSTOM_CONTAINER_EVENT"
	// MaxEventBytes is the largest event that fits in EventVar.
	MaxEventBytes = MaxString - len(EventVar) - 1

	// EventFileVar names the file that holds an event too large for
	// EventVar (a function with large_events: file); EventVar then holds
	// FileStub.
	EventFileVar = "SCF_CUSTOM_CONTAINER_EVENT_FILE"
	// EventFilePath is where that file is mounted, read-only.
	EventFilePath = "/run/jobgate/event.json"
)

// FileStub is what EventVar holds when the event of size bytes is in
// EventFilePath: a JSON object that says so.
func FileStub(size int) []byte {
	return []byte(`{"EventFile":"` + EventFilePath + `","EventBytes":` + strconv.Itoa(size) + `}`)
}

// LimitError says which limit an environment or argument broke.
type LimitError struct {
	What  string // e.g. "environment variable SCF_CUSTOM_CONTAINER_EVENT"
	Size  int
	Limit int
	Rule  string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s is %d bytes; the limit is %d bytes (%s)", e.What, e.Size, e.Limit, e.Rule)
}

// CheckEnv checks each "KEY=value" string and their total.
func CheckEnv(env []string) error {
	total := 0
	for _, s := range env {
		if len(s) > MaxString {
			key, _, _ := strings.Cut(s, "=")
			return &LimitError{What: "environment variable " + key + " (as KEY=value)", Size: len(s), Limit: MaxString,
				Rule: "Linux MAX_ARG_STRLEN: 128 KiB per string including its NUL"}
		}
		total += len(s) + 1
	}
	if total > MaxTotal {
		return &LimitError{What: "the environment (all KEY=value strings with their NULs)", Size: total, Limit: MaxTotal,
			Rule: "2 MiB for all environment variables together"}
	}
	return nil
}

// CheckArg checks one command or argument string.
func CheckArg(a string) error {
	if len(a) > MaxString {
		return &LimitError{What: "argument", Size: len(a), Limit: MaxString,
			Rule: "Linux MAX_ARG_STRLEN: 128 KiB per string including its NUL"}
	}
	return nil
}

// Builtins are the values of SCF's built-in variables plus jobgate's own.
type Builtins struct {
	FunctionName string
	Qualifier    string // default $LATEST
	Region       string
	AppID        string
	UIN          string
	RequestID    string
	Attempt      int
	// EventFile, if set, is EventFileVar's value (the event is in it).
	EventFile string
}

// builtinNames are the variables a function's env can never override.
var builtinNames = []string{
	EventVar, EventFileVar,
	"TENCENTCLOUD_RUNENV", "USER_CODE_ROOT", "USER",
	"SCF_FUNCTIONNAME", "SCF_FUNCTIONVERSION",
	"TENCENTCLOUD_REGION", "TENCENTCLOUD_APPID", "TENCENTCLOUD_UIN",
	"JOBGATE_REQUEST_ID", "JOBGATE_ATTEMPT",
}

// IsBuiltin reports whether name is set by jobgate itself.
func IsBuiltin(name string) bool {
	for _, n := range builtinNames {
		if n == name {
			return true
		}
	}
	return false
}

// Build returns the instance environment: the image's own env, then the
// function's env over it, then the event and built-ins over both (the
// precedence in docs/OPERATIONS.md, "What a job sees"). The result is
// sorted by key for stable specs and tests.
func Build(imageEnv []string, fnEnv map[string]string, b Builtins, event []byte) []string {
	vals := map[string]string{}
	for _, kv := range imageEnv {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	for k, v := range fnEnv {
		vals[k] = v
	}
	q := b.Qualifier
	if q == "" {
		q = "$LATEST"
	}
	for k, v := range map[string]string{
		EventVar:              string(event),
		"TENCENTCLOUD_RUNENV": "SCF",
		"USER_CODE_ROOT":      "/var/user/",
		"USER":                "qcloud",
		"SCF_FUNCTIONNAME":    b.FunctionName,
		"SCF_FUNCTIONVERSION": q,
		"TENCENTCLOUD_REGION": b.Region,
		"TENCENTCLOUD_APPID":  b.AppID,
		"TENCENTCLOUD_UIN":    b.UIN,
		"JOBGATE_REQUEST_ID":  b.RequestID,
		"JOBGATE_ATTEMPT":     strconv.Itoa(b.Attempt),
	} {
		vals[k] = v
	}
	if b.EventFile != "" {
		vals[EventFileVar] = b.EventFile
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+vals[k])
	}
	return env
}
