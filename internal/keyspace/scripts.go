package keyspace

import "github.com/redis/go-redis/v9"

// Lua scripts that touch several keys of the layout at once. Each is run
// with the keys built by Keys, in the order its comment gives.
var (
	// RecordCreate creates a PENDING record if absent. KEYS = record, event,
	// index, function index, pending set. ARGV = ttl (ms), index member
	// (<19-digit ns>:<id>), oldest member kept, event, then field/value
	// pairs. The id enters the pending set at Redis's own time. Returns 1
	// if created, 0 if it existed.
	RecordCreate = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[1])
for i = 3, 4 do
  redis.call('ZADD', KEYS[i], 0, ARGV[2])
  redis.call('ZREMRANGEBYLEX', KEYS[i], '-', '(' .. ARGV[3])
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[5], t[1] * 1000 + math.floor(t[2] / 1000), string.sub(ARGV[2], 21))
return 1`)

	// Submit records new PENDING invocations and queues their first
	// attempts' asynq tasks: for each, record and task both or neither
	// (a script is one unit in the AOF and on replicas), and a batch
	// as a whole. KEYS = per invocation, 7: record, event, index,
	// function index, pending set (RecordCreate's), asynq task hash, asynq
	// pending list (or, for a delayed one, asynq's scheduled set). ARGV =
	// now (ns), ttl (ms), oldest index member kept, then per invocation:
	// task id, task message, index member, event, due time (Unix seconds,
	// 0 = now), its record's ttl (ms, 0 = the shared one), number of
	// field/value items, those items. A task is written as asynq's own
	// enqueue (or schedule) script writes it. Returns per invocation 1
	// (created), 0 (its record existed: nothing written) or 2 (record
	// created, but a task with its id existed: left as it is, and the
	// record joins the pending set so the orphan sweeper replaces a dead
	// one). A created record with its own task needs no pending-set
	// entry: the two exist together or not at all.
	Submit = redis.NewScript(`
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
local trimmed = {}
local a = 4
for e = 0, #KEYS / 7 - 1 do
  local k = e * 7
  local id, msg, member, event, due = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local ttl = ARGV[a + 5]
  if ttl == '0' then ttl = ARGV[2] end
  local n = tonumber(ARGV[a + 6])
  local f = a + 7
  a = f + n
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    out[e + 1] = 0
  else
    redis.call('HSET', KEYS[k + 1], unpack(ARGV, f, a - 1))
    redis.call('PEXPIRE', KEYS[k + 1], ttl)
    redis.call('SET', KEYS[k + 2], event, 'PX', ttl)
    for i = 3, 4 do
      redis.call('ZADD', KEYS[k + i], 0, member)
      if not trimmed[KEYS[k + i]] then
        redis.call('ZREMRANGEBYLEX', KEYS[k + i], '-', '(' .. ARGV[3])
        trimmed[KEYS[k + i]] = true
      end
    end
    if redis.call('EXISTS', KEYS[k + 6]) == 1 then
      redis.call('ZADD', KEYS[k + 5], ms, string.sub(member, 21))
      out[e + 1] = 2
    else
      if due == '0' then
        redis.call('HSET', KEYS[k + 6], 'msg', msg, 'state', 'pending', 'pending_since', ARGV[1])
        redis.call('LPUSH', KEYS[k + 7], id)
      else
        redis.call('HSET', KEYS[k + 6], 'msg', msg, 'state', 'scheduled')
        redis.call('ZADD', KEYS[k + 7], due, id)
      end
      out[e + 1] = 1
    end
  end
end
return out`)

	// SubmitCancel takes back a Submit whose answer was lost (the
	// connection broke and the sender was told 503), if no worker has
	// taken its task yet. KEYS = Submit's for one invocation. ARGV = task
	// id, index member.
	// Returns 1 if cancelled, 0 if the task was already taken, -1 if
	// nothing was written.
	SubmitCancel = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local queued
if redis.call('TYPE', KEYS[7]).ok == 'zset' then
  queued = redis.call('ZREM', KEYS[7], ARGV[1])
else
  queued = redis.call('LREM', KEYS[7], 1, ARGV[1])
end
if queued == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], string.sub(ARGV[2], 21))
return 1`)

	// RecordUpdate: KEYS = record, attempts list, pending set, running set. ARGV = channel, id, mode,
	// attempt JSON or "", number of fields to delete, those fields, then
	// field/value pairs. mode: "" = any non-final status, "*" = any status,
	// else a comma-separated list of allowed current statuses. Returns -1 (no
	// record), 0 (status refused) or 1.
	RecordUpdate = redis.NewScript(`
local s = redis.call('HGET', KEYS[1], 'Status')
if not s then return -1 end
local mode = ARGV[3]
if mode == '' then
  if s == 'FINISHED' or s == 'FAILED' or s == 'ABORTED' then return 0 end
elseif mode ~= '*' then
  if not string.find(',' .. mode .. ',', ',' .. s .. ',', 1, true) then return 0 end
end
local ndel = tonumber(ARGV[5])
for i = 1, ndel do redis.call('HDEL', KEYS[1], ARGV[5 + i]) end
if #ARGV > 5 + ndel then redis.call('HSET', KEYS[1], unpack(ARGV, 6 + ndel)) end
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local st = redis.call('HGET', KEYS[1], 'Status')
if st == 'PENDING' then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[2])
else
  redis.call('ZREM', KEYS[3], ARGV[2])
end
if st == 'RUNNING' or st == 'SCHEDULING' then
  redis.call('SADD', KEYS[4], ARGV[2])
else
  redis.call('SREM', KEYS[4], ARGV[2])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1`)

	// LogAppend adds lines to a log within its byte cap. KEYS = log, log meta.
	// ARGV = ttl_ms, max_bytes, force, done, lines... Returns the lines added.
	LogAppend = redis.NewScript(`
local used = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
local trunc = redis.call('HGET', KEYS[2], 'truncated')
local max = tonumber(ARGV[2])
local added = 0
for i = 5, #ARGV do
  local l = ARGV[i]
  if ARGV[3] == '1' then
    redis.call('RPUSH', KEYS[1], l)
  elseif used + #l <= max then
    redis.call('RPUSH', KEYS[1], l)
    used = used + #l
    added = added + 1
  elseif not trunc then
    trunc = '1'
    redis.call('RPUSH', KEYS[1], cjson.encode({ts = cjson.decode(l)['ts'], stream = 'platform', line = 'jobgate: log truncated at ' .. max .. ' bytes; further output dropped'}))
    redis.call('HSET', KEYS[2], 'truncated', '1')
  end
end
redis.call('HSET', KEYS[2], 'bytes', used)
if ARGV[4] == '1' then redis.call('HSET', KEYS[2], 'done', '1') end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return added`)

	// TaskPromote makes a scheduled asynq task pending now, as asynq's
	// forwarder does when it is due. KEYS = scheduled set, pending list,
	// task hash. ARGV = task id, now (ns). Returns 1 if promoted, 0 if it
	// was not scheduled (forwarded already, or cancelled).
	TaskPromote = redis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'pending', 'pending_since', ARGV[2])
return 1`)

	// AsynqDropLapsed removes an active asynq task whose lease has lapsed
	// (asynq itself has given it up: its handler's context ends with the
	// lease) or that has none (a Redis failover kept the task but not its
	// lease entry, and asynq's recoverer only scans leases). The recoverer
	// would retry a lapsed one up to 2 minutes later; this lets the orphan
	// sweeper queue it at once. KEYS = active list, lease set, task hash.
	// ARGV = task id. Returns 1 if removed, 0 if leased or not active.
	AsynqDropLapsed = redis.NewScript(`
local exp = redis.call('ZSCORE', KEYS[2], ARGV[1])
if exp and tonumber(exp) >= tonumber(redis.call('TIME')[1]) then return 0 end
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1`)

	// ClaimRelease deletes a start claim if node holds it. KEYS = claim.
	// ARGV = node. Returns 1 if deleted.
	ClaimRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

	// LeaseAcquire takes a concurrency lease. KEYS[1] = the function's lease
	// set; ARGV = now (ms), expiry (ms), limit, member. Expired leases
	// (crashed workers) are dropped first; holding a lease already counts as
	// acquiring it. Returns 1 if taken, 0 if the function is at its limit.
	LeaseAcquire = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], 2 * (tonumber(ARGV[2]) - tonumber(ARGV[1])))
return 1`)

	// DeadLetterAdd stores a dead letter within its bounds. KEYS = entry,
	// index, function index. ARGV = entry JSON, member (<19-digit unix
	// ns>:<id>), ttl (ms), oldest member kept (retention), max per
	// function, function, DeadLetterPrefix. It replaces an earlier entry
	// of the id, trims both indexes of members past the retention (their
	// entries expired by TTL) and evicts the function's oldest entries over
	// max. Returns {trimmed, evicted ids}. (Entry keys are built inside the
	// script: on Cluster they share the index's slot, keyspace.ClusterPrefix.)
	DeadLetterAdd = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], 'member')
if old then
  redis.call('ZREM', KEYS[2], old)
  redis.call('ZREM', KEYS[3], old)
end
redis.call('HSET', KEYS[1], 'entry', ARGV[1], 'member', ARGV[2], 'function', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
local bound = '(' .. ARGV[4]
local trimmed = redis.call('ZREMRANGEBYLEX', KEYS[3], '-', bound)
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', bound)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
local evicted = {}
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
if over > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
    local id = string.sub(m, 21)
    redis.call('DEL', ARGV[7] .. id)
    redis.call('ZREM', KEYS[2], m)
    redis.call('ZREM', KEYS[3], m)
    table.insert(evicted, id)
  end
end
return {trimmed, evicted}`)

	// DestinationXAdd adds a destination's delivery to a stream once.
	// KEYS = the stream, its delivery mark (DestinationMark). ARGV =
	// delivery id, result, mark ttl (ms). Returns the entry id, or false
	// if the delivery was added before.
	DestinationXAdd = redis.NewScript(`
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return false end
return redis.call('XADD', KEYS[1], '*', 'delivery', ARGV[1], 'result', ARGV[2])`)

	// TimerSetLast keeps the latest fired instant of a timer (replicas race).
	// KEYS[1] = TimerLast; ARGV[1] = the instant (Unix seconds).
	TimerSetLast = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1`)
)
