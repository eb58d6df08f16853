"""The message store's Lua scripts split in halves for Redis Cluster (``shared/store_cluster.py``).

A *message half* touches only the keys of one message (one hash slot, ``{<storage id>}``) and
runs on the cluster; a *control half* touches only the control Redis (indexes, tenant counters,
idempotency, the broker). Each names its KEYS and ARGV at the top. Every message half that
writes the stream also ``SPUBLISH``es the new entry id on the message's wake channel (same
slot), which wakes the API processes' tail readers (``api/cluster_readers.py``).
"""

from shared.store_scripts import EXPIRE_WITH_LAST, TAKE_TOKEN

# -- create ------------------------------------------------------------------------------------

# Control half, run first. KEYS: pending, tenant active, tenant rate bucket, tenant stored,
# tenant bytes, then the broker list if there is a task, then the idempotency key if there is one.
# ARGV: request bytes, ttl, idempotency value ('' = none), max depth, max concurrent (0 = off),
#       now (unix s), message id, rate capacity (0 = off), refill per second, task message
#       ('' = none), stored-bytes quota (0 = off).
# Returns {outcome, detail} as the single-Redis create (limited | created | idempotent | overloaded
# | busy | quota); ``created`` has reserved the tenant's slot, listed the message as pending and
# pushed its task. The message itself is written next, by ``M_CREATE``.
C_ADMIT = (
    "#!lua\n"
    + TAKE_TOKEN
    + EXPIRE_WITH_LAST
    + """
local pending, active, bucket, stored, sizes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local size, ttl, idem_value = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local max_depth, max_concurrent, now, sid = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local capacity, refill, task, quota = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local broker = task ~= '' and KEYS[6] or nil
local idem_key = idem_value ~= '' and KEYS[broker and 7 or 6] or nil
if capacity > 0 then
  local wait = take_token(bucket, capacity, refill, now)
  if wait > 0 then return {'limited', tostring(wait)} end
end
if idem_value ~= '' then
  local prior = redis.call('GET', idem_key)
  if prior then return {'idempotent', prior} end
end
local horizon = now - ttl
redis.call('ZREMRANGEBYSCORE', pending, '-inf', horizon)
if max_depth > 0 and redis.call('ZCARD', pending) >= max_depth then return {'overloaded', ''} end
redis.call('ZREMRANGEBYSCORE', active, '-inf', horizon)
if max_concurrent > 0 and redis.call('ZCARD', active) >= max_concurrent then return {'busy', ''} end
if quota > 0 then
  local stale = redis.call('ZRANGEBYSCORE', stored, '-inf', now, 'LIMIT', 0, 256)
  if #stale > 0 then
    local freed = 0
    for _, each in ipairs(redis.call('HMGET', sizes, unpack(stale))) do
      freed = freed + (tonumber(each) or 0)
    end
    redis.call('HDEL', sizes, unpack(stale))
    redis.call('ZREM', stored, unpack(stale))
    redis.call('HINCRBY', sizes, '#total', -freed)
  end
  local used = tonumber(redis.call('HGET', sizes, '#total')) or 0
  if used + size > quota then return {'quota', tostring(used)} end
  redis.call('ZADD', stored, now + ttl, sid)
  redis.call('HSET', sizes, sid, size)
  redis.call('HINCRBY', sizes, '#total', size)
  expire_with_last(stored, sizes)
end
for _, key in ipairs({pending, active}) do
  redis.call('ZADD', key, now, sid)
  redis.call('EXPIRE', key, ttl)
end
if idem_value ~= '' then redis.call('SET', idem_key, idem_value, 'EX', ttl) end
if task ~= '' then redis.call('LPUSH', broker, task) end
return {'created', ''}
"""
)

# Message half. KEYS: status, request, events (a deleted message's tombstone, removed).
# ARGV: request JSON, ttl, field/value... (``epoch`` among them).
# Returns {created} or {exists, <the stored epoch>} (a repeat of this very call finds its own epoch).
M_CREATE = """#!lua
local status, request, events = KEYS[1], KEYS[2], KEYS[3]
local body, ttl = ARGV[1], ARGV[2]
if redis.call('EXISTS', status) == 1 then return {'exists', redis.call('HGET', status, 'epoch') or ''} end
redis.call('DEL', events)
redis.call('SET', request, body, 'EX', ttl)
redis.call('HSET', status, unpack(ARGV, 3))
redis.call('EXPIRE', status, ttl)
return {'created', ''}
"""

# -- claim -------------------------------------------------------------------------------------

# Message half (the control side lists the message as running before, and drops it from pending
# after). KEYS: status, lock, request. ARGV: now (iso), worker, owner, lease ms, max resumes, pid.
# Returns as the single-Redis claim: start | resume | exhausted (the lock taken for ``owner``,
# then the request and the status hash) | locked | the terminal status | gone.
M_CLAIM = """
local status_key, lock, request = KEYS[1], KEYS[2], KEYS[3]
local now, worker, owner, lease_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_resumes, pid = tonumber(ARGV[5]), ARGV[6]
local status = redis.call('HGET', status_key, 'status')
if not status then return {'gone'} end
local outcome
if status == 'pending' then
  redis.call('HSET', status_key, 'status', 'processing', 'started_at', now)
  outcome = 'start'
elseif status ~= 'processing' then
  return {status}
elseif redis.call('EXISTS', lock) == 1 then
  return {'locked'}
elseif redis.call('HINCRBY', status_key, 'resumes', 1) > max_resumes then
  outcome = 'exhausted'
else
  outcome = 'resume'
end
redis.call('HSET', status_key, 'updated_at', now, 'worker', worker, 'worker_pid', pid)
redis.call('SET', lock, owner, 'PX', lease_ms)
return {outcome, redis.call('GET', request) or '', unpack(redis.call('HGETALL', status_key))}
"""

# -- append ------------------------------------------------------------------------------------

# KEYS: status, events, cancel, lock. ARGV: ttl, maxlen, owner ('' = unchecked), lease ms,
#       n_fields, field/value..., event JSON..., and last the wake channel.
# As the single-Redis append (-1 | the cancel flag), plus the wake.
APPEND = """
local status_key, events, cancel, lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl, maxlen, owner, lease_ms, nf = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local channel = ARGV[#ARGV]
if redis.call('HGET', status_key, 'status') ~= 'processing' then return -1 end
if owner ~= '' then
  if redis.call('GET', lock) ~= owner then return -1 end
  redis.call('PEXPIRE', lock, lease_ms)
end
if nf > 0 then redis.call('HSET', status_key, unpack(ARGV, 6, 5 + 2 * nf)) end
local last
for i = 6 + 2 * nf, #ARGV - 1 do
  last = redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
end
redis.call('EXPIRE', events, ttl)
if last then redis.call('SPUBLISH', channel, last) end
return redis.call('EXISTS', cancel)
"""

# -- finish ------------------------------------------------------------------------------------

# Message half. KEYS: status, events, request, cancel, lock. ARGV: retention, maxlen, new status,
# expected status ('' = any live one), now, owner ('' = unchecked), n_fields, field/value...,
# event JSON..., and last the wake channel.
# Returns {status afterwards or '', tenant, idempotency key}: the control half follows.
M_FINISH = """
local status_key, events, request, cancel, lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local retention, maxlen, new, expected, now, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local nf = tonumber(ARGV[7])
local channel = ARGV[#ARGV]
local status, tenant, idem = unpack(redis.call('HMGET', status_key, 'status', 'tenant', 'idem_key'))
if not status then return {'', '', ''} end
tenant, idem = tenant or '', idem or ''
if status == 'completed' or status == 'cancelled' or status == 'error' then return {status, tenant, idem} end
if expected ~= '' and status ~= expected then return {status, tenant, idem} end
if owner ~= '' and redis.call('GET', lock) ~= owner then return {status, tenant, idem} end
if nf > 0 then redis.call('HSET', status_key, unpack(ARGV, 8, 7 + 2 * nf)) end
local last
for i = 8 + 2 * nf, #ARGV - 1 do
  last = redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
end
redis.call('HSET', status_key, 'status', new, 'updated_at', now, 'completed_at', now,
           'event_count', redis.call('XLEN', events))
redis.call('DEL', cancel, lock)
for _, key in ipairs({status_key, events, request}) do redis.call('EXPIRE', key, retention) end
if last then redis.call('SPUBLISH', channel, last) end
return {new, tenant, idem}
"""

# Control half of finish. KEYS: running, pending, tenant active, tenant stored, tenant bytes,
# then the idempotency key if the message has one. ARGV: message id, retention.
# The message leaves the indexes and the tenant's concurrency; its idempotency record and its
# stored-bytes entry now end with its retention.
C_FINISH = (
    EXPIRE_WITH_LAST
    + """
local running, pending, active, stored, sizes, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local sid, retention = ARGV[1], tonumber(ARGV[2])
for _, key in ipairs({running, pending, active}) do redis.call('ZREM', key, sid) end
if idem then redis.call('EXPIRE', idem, retention) end
local kept_until = tonumber(redis.call('TIME')[1]) + retention
if redis.call('ZADD', stored, 'XX', 'CH', kept_until, sid) == 1 then expire_with_last(stored, sizes) end
return 1
"""
)

# -- delete ------------------------------------------------------------------------------------

# Message half. KEYS: status, events, request, lock, cancel. ARGV: tombstone JSON, tombstone
# ttl ms, wake channel. Returns {1 | 0 (did not exist), tenant, idempotency key}. The tombstone
# (and its wake) reaches every tail of the stream, as in the single-Redis delete.
M_DELETE = """
local status_key, events = KEYS[1], KEYS[2]
local tombstone, tombstone_ms, channel = ARGV[1], ARGV[2], ARGV[3]
local found, tenant, idem = unpack(redis.call('HMGET', status_key, 'status', 'tenant', 'idem_key'))
if not found then return {0, '', ''} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local last = redis.call('XADD', events, '*', 'd', tombstone)
redis.call('PEXPIRE', events, tombstone_ms)
redis.call('SPUBLISH', channel, last)
return {1, tenant or '', idem or ''}
"""

# Control half of delete (and of dropping a message whose create never finished). KEYS: running,
# pending, tenant active, tenant stored, tenant bytes, then the idempotency key to delete if any.
# ARGV: message id. Releases the message's stored bytes.
C_FORGET = (
    EXPIRE_WITH_LAST
    + """
local running, pending, active, stored, sizes, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local sid = ARGV[1]
for _, key in ipairs({running, pending, active}) do redis.call('ZREM', key, sid) end
if idem then redis.call('DEL', idem) end
if redis.call('ZREM', stored, sid) == 1 then
  redis.call('HINCRBY', sizes, '#total', -(tonumber(redis.call('HGET', sizes, sid)) or 0))
  redis.call('HDEL', sizes, sid)
  expire_with_last(stored, sizes)
end
return 1
"""
)

# -- leases ------------------------------------------------------------------------------------

# Message half of a lease renewal. KEYS: lock. ARGV: owner, lease ms. 1 if still owned.
M_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# What the reaper reads of one message. KEYS: status, lock.
# Returns {status or '', lock pttl ms, queue, band}.
M_REAP_READ = """
local status, queue, band = unpack(redis.call('HMGET', KEYS[1], 'status', 'queue', 'band'))
return {status or '', redis.call('PTTL', KEYS[2]), queue or '', band or '0'}
"""

#: Every message-half script: each must declare only keys of one message (checked by a test).
MESSAGE_HALVES = {
    "M_CREATE": M_CREATE,
    "M_CLAIM": M_CLAIM,
    "APPEND": APPEND,
    "M_FINISH": M_FINISH,
    "M_DELETE": M_DELETE,
    "M_RENEW": M_RENEW,
    "M_REAP_READ": M_REAP_READ,
}
