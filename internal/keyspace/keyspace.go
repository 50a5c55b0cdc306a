// Package keyspace is jobgate's Redis key layout: the name of every key
// and channel any component reads or writes, and (scripts.go) every Lua
// script that touches several of them at once. Stores take a Keys value
// and never build a key name themselves, so the layout (a hash tag per
// invocation for Redis Cluster, a new prefix) changes here alone.
//
// Layout, under the configured prefix P (default "jobgate"):
//
//	P:inv:<id>                       invocation record (hash)
//	P:inv:<id>:event                 its event, byte-for-byte (string)
//	P:inv:<id>:attempts              earlier attempts' summaries (list)
//	P:idx, P:idx:fn:<function>       newest-first listing indexes (zset, by lex)
//	P:changes                        record change announcements (channel)
//	P:pending                        PENDING invocations that may lack a live task (zset,
//	                                 score = ms since they last became or stayed PENDING):
//	                                 retries, redrives; not a submission written with its
//	                                 task (keyspace.Submit). For the orphan sweeper
//	P:sweeper                        the lock that lets one sweeper run at a time
//	P:running                        RUNNING and SCHEDULING invocations (set): on a node,
//	                                 for the lost-node sweeper
//	P:node:<node>                    a worker's lease (string, expires unless renewed)
//	P:nodelost:<node>                when a node was first seen without its lease (ms)
//	P:lostsweeper                    the lock that lets one lost-node sweeper run at a time
//	P:log:<instance>, :meta          one attempt's NDJSON log (list) and its counters (hash)
//	P:dlq, P:dlq:<id>                dead-letter index (zset) and entries (hash)
//	P:dlq-fn:<function>              one function's dead letters (zset), for its bound
//	P:terminate:<id>, P:control      terminate requests (string) and their announcements (channel)
//	P:claim:<instance>               the node allowed to start an attempt (string)
//	P:conc:<function>                concurrency leases (zset, score = expiry)
//	P:timer:<function>:<trigger>:last  latest fired instant of a timer (string)
//	P:batch:…, P:batchmember:…       broker batch journal (strings)
//
// On Redis Cluster (ClusterPrefix) the prefix carries asynq's queue's
// hash tag, "P:{jobgate}", so every key above shares the slot of asynq's
// queue keys and every script stays slot-local, as asynq keeps each of its
// queues in one slot. Only the logs, the bulk of the bytes, spread over the
// masters: "P:log:{<instance>}" and its ":meta" share their own slot.
//
// asynq's own keys are "asynq:{<queue>}:…"; the ones jobgate reads or
// writes (its pending list, task hashes, the queue set: the submit path
// writes a first attempt's task in the same script as its record; the
// active list and lease set, for the orphan sweeper) are named here too,
// and a test pins them against a real asynq server.
package keyspace

import (
	"fmt"
	"strings"
)

// Queue is the asynq queue every invocation goes through.
const Queue = "jobgate"

// clusterTag is what ClusterPrefix appends: asynq's queue's hash tag.
const clusterTag = ":{" + Queue + "}"

// ClusterPrefix is the key prefix to use on Redis Cluster for a
// configured prefix: jobgate's keys then share the slot of asynq's queue.
func ClusterPrefix(prefix string) string { return prefix + clusterTag }

// Keys builds key names under one prefix.
type Keys struct {
	prefix string
	// logs prefixes the per-attempt logs; spread says they carry their
	// instance as hash tag (a ClusterPrefix layout).
	logs   string
	spread bool
}

// New returns the layout under prefix (a ClusterPrefix on Redis Cluster).
func New(prefix string) Keys {
	if base, ok := strings.CutSuffix(prefix, clusterTag); ok {
		return Keys{prefix: prefix, logs: base + ":log:", spread: true}
	}
	return Keys{prefix: prefix, logs: prefix + ":log:"}
}

// Prefix is the layout's prefix.
func (k Keys) Prefix() string { return k.prefix }

// Record is the hash of invocation id.
func (k Keys) Record(id string) string { return k.prefix + ":inv:" + id }

// Event holds the event of invocation id.
func (k Keys) Event(id string) string { return k.prefix + ":inv:" + id + ":event" }

// Attempts lists the summaries of id's earlier attempts.
func (k Keys) Attempts(id string) string { return k.prefix + ":inv:" + id + ":attempts" }

// Index lists every invocation (fn == "") or one function's, newest first.
func (k Keys) Index(fn string) string {
	if fn == "" {
		return k.prefix + ":idx"
	}
	return k.prefix + ":idx:fn:" + fn
}

// Pending holds the PENDING invocations, scored by when they last were
// written as PENDING (milliseconds, Redis's clock).
func (k Keys) Pending() string { return k.prefix + ":pending" }

// SweeperLock is held by the one process sweeping orphans.
func (k Keys) SweeperLock() string { return k.prefix + ":sweeper" }

// Running holds the RUNNING and SCHEDULING invocations.
func (k Keys) Running() string { return k.prefix + ":running" }

// Node is a worker's lease: present while it renews it.
func (k Keys) Node(node string) string { return k.prefix + ":node:" + node }

// NodeLost holds when a node was first seen without its lease.
func (k Keys) NodeLost(node string) string { return k.prefix + ":nodelost:" + node }

// LostSweeperLock is held by the one process sweeping lost nodes.
func (k Keys) LostSweeperLock() string { return k.prefix + ":lostsweeper" }

// Changes is the channel on which record changes are announced.
func (k Keys) Changes() string { return k.prefix + ":changes" }

// Log is the NDJSON line list of one attempt (its instance id).
func (k Keys) Log(instance string) string {
	if k.spread {
		return k.logs + "{" + instance + "}"
	}
	return k.logs + instance
}

// LogMeta holds a log's byte count and its truncated/done flags.
func (k Keys) LogMeta(instance string) string { return k.Log(instance) + ":meta" }

// DeadLetters is the dead-letter index.
func (k Keys) DeadLetters() string { return k.prefix + ":dlq" }

// DeadLetter is one dead-letter entry.
func (k Keys) DeadLetter(id string) string { return k.prefix + ":dlq:" + id }

// DeadLetterIndex lists one function's dead letters, oldest first.
func (k Keys) DeadLetterIndex(fn string) string { return k.prefix + ":dlq-fn:" + fn }

// DeadLetterPrefix is what DeadLetter puts before a RequestId (for the
// script that evicts entries by id).
func (k Keys) DeadLetterPrefix() string { return k.prefix + ":dlq:" }

// Terminate holds a terminate request ("grace" or "kill") for id. The key
// makes the request durable: a worker that was down when it was announced
// still finds it when it re-attaches.
func (k Keys) Terminate(id string) string { return k.prefix + ":terminate:" + id }

// Control announces terminate requests to every worker (payload: the id).
func (k Keys) Control() string { return k.prefix + ":control" }

// Claim names the node allowed to start an attempt (its instance id).
func (k Keys) Claim(instance string) string { return k.prefix + ":claim:" + instance }

// Concurrency holds a function's concurrency leases.
func (k Keys) Concurrency(fn string) string { return k.prefix + ":conc:" + fn }

// TimerLast holds the latest instant a timer trigger fired.
func (k Keys) TimerLast(fn, trigger string) string {
	return k.prefix + ":timer:" + fn + ":" + trigger + ":last"
}

// Batch journals a broker batch queued from partition, starting at first.
func (k Keys) Batch(fn, trigger, partition, first string) string {
	return fmt.Sprintf("%s:batch:%s:%s:%s:%s", k.prefix, fn, trigger, partition, first)
}

// BatchMember maps a broker message to the first key of its batch.
func (k Keys) BatchMember(fn, trigger, partition, key string) string {
	return fmt.Sprintf("%s:batchmember:%s:%s:%s:%s", k.prefix, fn, trigger, partition, key)
}

// DestinationMark records that delivery id was added to a destination
// stream (a user's key, not under the prefix): "{<stream>}:…" hashes to
// the stream's own slot, so the two stay in one script on a Cluster.
func DestinationMark(stream, id string) string { return "{" + stream + "}:jobgate-delivered:" + id }

// AsynqPending is asynq's list of a queue's pending task ids. asynq keeps
// it private (internal/base.PendingKey); a test pins the name against a
// real asynq server so an upgrade that moves it fails loudly.
func AsynqPending(queue string) string { return "asynq:{" + queue + "}:pending" }

// AsynqScheduled is asynq's set of a queue's delayed task ids, scored by
// when they are due (Unix seconds; internal/base.ScheduledKey).
func AsynqScheduled(queue string) string { return "asynq:{" + queue + "}:scheduled" }

// AsynqActive is asynq's list of a queue's tasks being processed
// (internal/base.ActiveKey).
func AsynqActive(queue string) string { return "asynq:{" + queue + "}:active" }

// AsynqLease is asynq's set of active tasks scored by their lease's
// expiry (Unix seconds; internal/base.LeaseKey).
func AsynqLease(queue string) string { return "asynq:{" + queue + "}:lease" }

// AsynqTask is asynq's hash of one task (internal/base.TaskKey).
func AsynqTask(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// AsynqQueues is asynq's set of known queue names (internal/base.AllQueues).
const AsynqQueues = "asynq:queues"
