"""The message store's Lua scripts: every state change of a message is one of these.

Each script's comment lists its KEYS and ARGV; ``shared/store.py`` wraps each one in a method
with named arguments and a typed result.
"""

# KEYS: status, request, idempotency, pending, tenant active, tenant rate bucket, broker list,
#       events (a deleted message's tombstone, removed when its id is created anew),
#       tenant stored (sorted set), tenant bytes (hash).
# ARGV: request JSON, ttl, idempotency value ('' = none), max depth, max concurrent (0 = off),
#       now (unix s), message id, rate capacity (0 = off), rate refill per second,
#       task message ('' = none), stored-bytes quota (0 = off), field/value...
# The quota counts the stored request bytes of the tenant's messages until their keys expire
# (entries past their expiry are dropped from the count here, a bounded number per call).
# Returns {outcome, detail}: limited (detail = ms until a token) | created | idempotent (detail =
# the stored value) | exists | overloaded | busy. The rate token is spent first, as every call
# counts against the rate; only ``created`` writes the message and LPUSHes its task message
# (kombu's Redis transport publishes by that same LPUSH), so a message is queued exactly when
# it is stored. The broker list sits outside the message's hash slot: kombu's transport is not
# for Redis Cluster anyway.
# A tenant's token bucket (hash ``tokens``, ``ts``): take one token; returns the ms until one is
# back when there is none (0 = taken). Shared by the create script and ``take_rate_token``.
TAKE_TOKEN = """
local function take_token(key, capacity, rate, now)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / rate * 1000) + 1000)
  return wait
end
"""

# "#!lua": a script with flags (none) is refused as a whole when Redis is over maxmemory, before
# it runs; without them Redis lets it write past the limit (measured: 10 MB stored under a 4 MB cap).
# A tenant's stored-bytes keys (sorted set by expiry, sizes hash) live as long as the message
# that expires last.
EXPIRE_WITH_LAST = """
local function expire_with_last(stored, sizes)
  local last = redis.call('ZRANGE', stored, -1, -1, 'WITHSCORES')
  if last[2] then
    local at = math.ceil(tonumber(last[2])) + 1
    redis.call('EXPIREAT', stored, at)
    redis.call('EXPIREAT', sizes, at)
  else
    redis.call('DEL', stored, sizes)
  end
end
"""

CREATE = (
    "#!lua\n"
    + TAKE_TOKEN
    + EXPIRE_WITH_LAST
    + """
local capacity = tonumber(ARGV[8])
if capacity > 0 then
  local wait = take_token(KEYS[6], capacity, tonumber(ARGV[9]), tonumber(ARGV[6]))
  if wait > 0 then return {'limited', tostring(wait)} end
end
if ARGV[3] ~= '' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {'idempotent', prior} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
local horizon = tonumber(ARGV[6]) - tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', horizon)
if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then
  return {'overloaded', ''}
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', horizon)
if tonumber(ARGV[5]) > 0 and redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[5]) then
  return {'busy', ''}
end
local quota = tonumber(ARGV[11])
if quota > 0 then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', ARGV[6], 'LIMIT', 0, 256)
  if #stale > 0 then
    local freed = 0
    for _, size in ipairs(redis.call('HMGET', KEYS[10], unpack(stale))) do
      freed = freed + (tonumber(size) or 0)
    end
    redis.call('HDEL', KEYS[10], unpack(stale))
    redis.call('ZREM', KEYS[9], unpack(stale))
    redis.call('HINCRBY', KEYS[10], '#total', -freed)
  end
  local used = tonumber(redis.call('HGET', KEYS[10], '#total')) or 0
  if used + #ARGV[1] > quota then return {'quota', tostring(used)} end
  redis.call('ZADD', KEYS[9], tonumber(ARGV[6]) + tonumber(ARGV[2]), ARGV[7])
  redis.call('HSET', KEYS[10], ARGV[7], #ARGV[1])
  redis.call('HINCRBY', KEYS[10], '#total', #ARGV[1])
  expire_with_last(KEYS[9], KEYS[10])
end
redis.call('DEL', KEYS[8])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 4, 5 do
  redis.call('ZADD', KEYS[i], ARGV[6], ARGV[7])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2]) end
if ARGV[10] ~= '' then redis.call('LPUSH', KEYS[7], ARGV[10]) end
return {'created', ''}
"""
)

# KEYS: bucket. ARGV: capacity, refill per second, now (unix s). Returns the ms until a token.
RATE = TAKE_TOKEN + "return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"

# KEYS: status, lock, pending, running, request.
# ARGV: now (iso), worker, owner, lease ms, lease expiry (unix s), max resumes, message id, pid,
#       ttl of the running set.
# Returns {outcome}: start (was pending) | resume (processing, its lock lapsed: the worker is
# gone) | exhausted (as resume, but over max resumes) | locked (a live worker holds it) |
# the terminal status | gone. start, resume and exhausted take the lock for ``owner``.
CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone'} end
local outcome
if status == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at', ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[7])
  outcome = 'start'
elseif status ~= 'processing' then
  return {status}
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  return {'locked'}
elseif redis.call('HINCRBY', KEYS[1], 'resumes', 1) > tonumber(ARGV[6]) then
  outcome = 'exhausted'
else
  outcome = 'resume'
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1], 'worker', ARGV[2], 'worker_pid', ARGV[8])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[9])
return {outcome, redis.call('GET', KEYS[5]) or '', unpack(redis.call('HGETALL', KEYS[1]))}
"""

# KEYS: status, events, cancel, lock. ARGV: ttl, maxlen, owner ('' = unchecked), lease ms,
#       n_fields, field/value..., event JSON...
# Returns -1 when the message is no longer processing (deleted, or ended) or another worker
# owns it now, else the cancel flag. Renews the writer's lease.
APPEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then return -1 end
if ARGV[3] ~= '' then
  if redis.call('GET', KEYS[4]) ~= ARGV[3] then return -1 end
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
local nf = tonumber(ARGV[5])
if nf > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + 2 * nf)) end
for i = 6 + 2 * nf, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return redis.call('EXISTS', KEYS[3])
"""

# KEYS: status, events, request, cancel, lock, running, pending, tenant active, idempotency,
#       tenant stored.
# ARGV: retention, maxlen, new status, expected status ('' = any live one), now,
#       owner ('' = unchecked), message id, n_fields, field/value..., event JSON...
# Returns the status the message has afterwards (nil when it does not exist). The tenant's
# stored-bytes entry for the message now ends with its retention.
FINISH = (
    EXPIRE_WITH_LAST
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'completed' or status == 'cancelled' or status == 'error' then return status end
if ARGV[4] ~= '' and status ~= ARGV[4] then return status end
if ARGV[6] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[6] then return status end
local nf = tonumber(ARGV[8])
if nf > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 9, 8 + 2 * nf)) end
for i = 9 + 2 * nf, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'updated_at', ARGV[5], 'completed_at', ARGV[5],
           'event_count', redis.call('XLEN', KEYS[2]))
redis.call('DEL', KEYS[4], KEYS[5])
for i = 6, 8 do redis.call('ZREM', KEYS[i], ARGV[7]) end
for _, i in ipairs({1, 2, 3, 9}) do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
local kept_until = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1])
if redis.call('ZADD', KEYS[10], 'XX', 'CH', kept_until, ARGV[7]) == 1 then
  expire_with_last(KEYS[10], KEYS[11])
end
return ARGV[3]
"""
)

# KEYS: status, cancel. ARGV: flag ttl. Sets the flag for a running message; returns its status.
FLAG_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'processing' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[1]) end
return status
"""

# KEYS: status, events, request, lock, cancel, running, pending, tenant active, idempotency,
#       tenant stored, tenant bytes.
# ARGV: message id, tombstone JSON, tombstone ttl ms. The message's stored bytes are released.
# Returns 1 if it existed. A running generation stops at its next append, which finds no
# status (and its lease renewal finds no lock). The stream is replaced by a one-entry
# tombstone that lives a few seconds: its XADD wakes every blocked tail of the stream, in
# every API process, which then finds the status gone and ends its observers (the tombstone
# itself is never sent: see ``StreamGone``).
DELETE = (
    EXPIRE_WITH_LAST
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[9])
for i = 6, 8 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if redis.call('ZREM', KEYS[10], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[11], '#total', -(tonumber(redis.call('HGET', KEYS[11], ARGV[1])) or 0))
  redis.call('HDEL', KEYS[11], ARGV[1])
  expire_with_last(KEYS[10], KEYS[11])
end
redis.call('XADD', KEYS[2], '*', 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)
