// Package control is how gateways ask workers to act on a running
// instance they do not know the host of: a durable request key plus an
// announcement on a channel every worker listens to.
package control

// TerminateKey holds a terminate request ("grace" or "kill") for a
// RequestId. The key makes the request durable: a worker that was down
// when it was announced still finds it when it re-attaches.
func TerminateKey(prefix, id string) string { return prefix + ":terminate:" + id }

// Channel announces requests (the payload is the RequestId).
func Channel(prefix string) string { return prefix + ":control" }

// Terminate modes.
const (
	Grace = "grace" // SIGTERM, SIGKILL after the grace period
	Kill  = "kill"  // SIGKILL now
)
