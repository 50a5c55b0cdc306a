// Package chaos is jobgate's chaos suite (`task chaos`, build tag
// "chaos"): mixed load from every trigger kind through two gateways and
// two workers while each process, Redis, containerd and a broker are
// killed in turn; every accepted event is then checked against what ran.
// The results go to docs/RELIABILITY.md.
package chaos
