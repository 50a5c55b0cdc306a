// Package layers states jobgate's import layering and checks it (see
// layers_test.go and docs/ARCHITECTURE.md): a package imports only
// packages of lower layers, and only the library layers import within
// themselves. Test support may import anything; nothing else imports it.
package layers

// Module is the module path the layering applies to.
const Module = "github.com/jobgate/jobgate"

// Layer is a set of packages (paths relative to the module root), bottom
// first in Layers.
type Layer struct {
	Name string
	// Library layers may import their own members (small leaf packages
	// building on each other); the others may not, so roles never call
	// each other and adapters never reach sideways.
	Library  bool
	Packages []string
}

// Layers, bottom to top.
var Layers = []Layer{
	{"foundation", true, []string{"schemas", "internal/version", "internal/jobenv", "internal/jsonobj", "internal/connpool", "internal/keyspace", "internal/cloudevent", "internal/scfcron", "internal/startstop", "internal/imagebuild", "worker/stub", "worker/stub/stubbin"}},
	{"state", true, []string{"internal/config", "internal/redisconn", "internal/record", "internal/logstore", "internal/deadletter", "internal/control", "internal/queue", "internal/metrics"}},
	{"services", true, []string{"internal/submit", "worker/runtime", "worker/logdriver", "worker/jobnet"}},
	{"trigger seam", false, []string{"triggers"}},
	{"adapters", false, []string{"triggers/timer", "triggers/httptrigger", "triggers/kafka", "triggers/natsjs", "triggers/amqp", "triggers/redisstream"}},
	{"roles", false, []string{"gateway", "worker", "triggers/sources"}},
	{"composition root", false, []string{"cmd/jobgate/node"}},
	{"commands", false, []string{"cmd/jobgate", "cmd/jobgate-logger", "cmd/jobgate-stub", "deploy/pushimage", "deploy/samplejob"}},
}

// TestSupport may import any package; no package of Layers may import it.
var TestSupport = []string{"internal/testkit/testenv", "internal/testkit/testjob", "internal/testkit/testjob/body", "internal/testkit/chaos", "internal/testkit/fleet", "deploy/kubernetes", "deploy/systemd", "triggers/triggertest", "bench", "bench/cmd/loadgen", "bench/cmd/httpfloor", "internal/layers"}
