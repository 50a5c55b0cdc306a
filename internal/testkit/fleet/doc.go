// Package fleet is jobgate's fleet suites (build tag "fleet", run by CI
// and `task fleet`): three worker processes, each with a containerd of
// its own, and two gateways over a Redis Sentinel group (a master, a
// replica, three sentinels; TestSentinelFleet) or a Redis Cluster (three
// masters with a replica each; TestClusterFleet), all started from
// Debian's binaries. They spread load, lose a host, partition a worker
// from Redis (Sentinel), reshard under load (Cluster) and fail Redis over
// under load, and check every accepted event against what ran (each job
// reports its run's start and end to the test).
package fleet
