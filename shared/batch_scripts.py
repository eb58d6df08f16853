"""The Lua scripts of Message Batches (``batches.py`` and ``batch_feed.py`` wrap each in a method)."""

# Shared tail of the scripts that may complete a batch. KEYS[1] = meta, KEYS[4] = active set,
# KEYS[5..] = every key of the batch; ARGV[1] = now (iso), ARGV[2] = retention, ARGV[3] = storage id.
END_IF_DONE = """
local function end_if_done()
  local total, done = unpack(redis.call('HMGET', KEYS[1], 'total', 'done'))
  if tonumber(done) < tonumber(total) or redis.call('HGET', KEYS[1], 'status') == 'ended' then
    return 0
  end
  redis.call('HSET', KEYS[1], 'status', 'ended', 'ended_at', ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[3])
  for i = 5, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
  return 1
end
"""

# KEYS: meta, results, inflight, active, every batch key. ARGV: now, retention, storage id,
#       message storage id, index, kind, line, expired line.
# Returns {recorded (0|1), ended (0|1)}. Only the first record of a message counts (SREM).
RECORD = (
    END_IF_DONE
    + """
if redis.call('SREM', KEYS[3], ARGV[4]) == 0 then return {0, 0} end
local kind, line = ARGV[6], ARGV[7]
if kind == 'canceled' and redis.call('HGET', KEYS[1], 'ending') == 'expired' then
  kind, line = 'expired', ARGV[8]
end
redis.call('HSET', KEYS[2], ARGV[5], line)
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
redis.call('HINCRBY', KEYS[1], kind, 1)
redis.call('HINCRBY', KEYS[1], 'done', 1)
return {1, end_if_done()}
"""
)

# KEYS: meta, results, inflight, active, every batch key. ARGV: now, retention, storage id,
#       ending (canceled|expired), new status.
# Stops the feed: every request not yet fed counts as ``ending``. Returns {ended, inflight ids...};
# nothing when the batch is not in progress.
STOP = (
    END_IF_DONE
    + """
local status, ending = unpack(redis.call('HMGET', KEYS[1], 'status', 'ending'))
if status ~= 'in_progress' or ending then return {-1} end
local total, fed = unpack(redis.call('HMGET', KEYS[1], 'total', 'fed'))
local unfed = tonumber(total) - tonumber(fed)
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'ending', ARGV[4], 'unfed_from', fed, 'fed', total)
if ARGV[4] == 'canceled' then redis.call('HSET', KEYS[1], 'cancel_initiated_at', ARGV[1]) end
redis.call('HINCRBY', KEYS[1], ARGV[4], unfed)
redis.call('HINCRBY', KEYS[1], 'done', unfed)
return {end_if_done(), unpack(redis.call('SMEMBERS', KEYS[3]))}
"""
)

# KEYS: meta, inflight. ARGV: expected fed, new fed, message storage ids...
# Advances the feed cursor if nobody else did and the batch still runs; 1 if so.
ADVANCE = """
local status, fed = unpack(redis.call('HMGET', KEYS[1], 'status', 'fed'))
if status ~= 'in_progress' or fed ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'fed', ARGV[2])
if #ARGV > 2 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 3))
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
return 1
"""
