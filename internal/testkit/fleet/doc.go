// Package fleet is jobgate's fleet suite (build tag "fleet", run by CI
// and `task fleet`): three worker processes, each with a containerd of
// its own, and two gateways over a Redis Sentinel group (a master, a
// replica, three sentinels), all started from Debian's binaries. It
// spreads load, loses a host, partitions a worker from Redis and fails
// Redis over under load, and checks every accepted event against what
// ran (each job reports its run's start and end to the test).
package fleet
