"""Redis Cluster halves of a create (``AdmitScript``, ``MessageCreateScript``) and of a claim."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.records import Admission, AdmissionOutcome, Claim, ClaimOutcome
from shared.store.admission import TAKE_TOKEN
from shared.store.base import EXPIRE_WITH_LAST
from shared.store.script import FieldValues, ScriptCall, key, optional_key, pairs

# -- create ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AdmitScript(ScriptCall[Admission]):
    """Control half of a create, run first: rate token, idempotency, queue depth, tenant
    concurrency and quota, the pending index and the task push, as ``CreateScript`` does them,
    without the message itself (``MessageCreateScript`` writes it next). ``created`` reserved
    everything and queued the task."""

    pending_key: str = key()
    active_key: str = key()
    rate_key: str = key()
    stored_key: str = key()
    sizes_key: str = key()
    idempotency_key: str | None = optional_key()
    broker_key: str | None = optional_key()
    #: The request's size in bytes (what the quota counts).
    request_bytes: int
    ttl: int
    idempotency_value: str = ""
    max_depth: int = 0
    max_concurrent: int = 0
    now: float
    message_id: str
    rate_capacity: float = 0
    rate_refill: float = 0
    task_payload: str = ""
    quota: int = 0

    FLAGGED = True
    PRELUDE = TAKE_TOKEN + EXPIRE_WITH_LAST
    BODY = """
if rate_capacity > 0 then
  local wait = take_token(rate_key, rate_capacity, rate_refill, now)
  if wait > 0 then return {'limited', tostring(wait)} end
end
if idempotency_key then
  local prior = redis.call('GET', idempotency_key)
  if prior then return {'idempotent', prior} end
end
local horizon = now - ttl
redis.call('ZREMRANGEBYSCORE', pending_key, '-inf', horizon)
if max_depth > 0 and redis.call('ZCARD', pending_key) >= max_depth then return {'overloaded', ''} end
redis.call('ZREMRANGEBYSCORE', active_key, '-inf', horizon)
if max_concurrent > 0 and redis.call('ZCARD', active_key) >= max_concurrent then return {'busy', ''} end
if quota > 0 then
  local stale = redis.call('ZRANGEBYSCORE', stored_key, '-inf', now, 'LIMIT', 0, 256)
  if #stale > 0 then
    local freed = 0
    for _, size in ipairs(redis.call('HMGET', sizes_key, unpack(stale))) do
      freed = freed + (tonumber(size) or 0)
    end
    redis.call('HDEL', sizes_key, unpack(stale))
    redis.call('ZREM', stored_key, unpack(stale))
    redis.call('HINCRBY', sizes_key, '#total', -freed)
  end
  local used = tonumber(redis.call('HGET', sizes_key, '#total')) or 0
  if used + request_bytes > quota then return {'quota', tostring(used)} end
  redis.call('ZADD', stored_key, now + ttl, message_id)
  redis.call('HSET', sizes_key, message_id, request_bytes)
  redis.call('HINCRBY', sizes_key, '#total', request_bytes)
  expire_with_last(stored_key, sizes_key)
end
for _, set in ipairs({pending_key, active_key}) do
  redis.call('ZADD', set, now, message_id)
  redis.call('EXPIRE', set, ttl)
end
if idempotency_key then redis.call('SET', idempotency_key, idempotency_value, 'EX', ttl) end
if broker_key then redis.call('LPUSH', broker_key, task_payload) end
return {'created', ''}
"""

    def parse(self, reply: Any) -> Admission:
        """As ``CreateScript.parse``; an idempotent reply keeps the stored value's id."""
        outcome, detail = AdmissionOutcome(reply[0]), str(reply[1])
        if outcome is AdmissionOutcome.LIMITED:
            return Admission(outcome, self.message_id, int(detail) / 1000)
        if outcome is not AdmissionOutcome.IDEMPOTENT:
            return Admission(outcome, self.message_id)
        digest, _, first_id = detail.partition(" ")
        mine = self.idempotency_value.partition(" ")[0]
        return Admission(
            AdmissionOutcome.IDEMPOTENT if digest == mine else AdmissionOutcome.CONFLICT, first_id
        )


@dataclass(frozen=True, kw_only=True)
class MessageCreateScript(ScriptCall[str | None]):
    """Message half of a create: the status hash and the request (a deleted message's tombstone
    stream removed). Replies None when it wrote them, else the epoch of the message that already
    holds the id (a resent call finds its own)."""

    status_key: str = key()
    request_key: str = key()
    events_key: str = key()
    request_json: str
    ttl: int
    status_fields: FieldValues = pairs()  # noqa: RUF009  (a dataclasses.field)

    FLAGGED = True
    BODY = """
if redis.call('EXISTS', status_key) == 1 then
  return {'exists', redis.call('HGET', status_key, 'epoch') or ''}
end
redis.call('DEL', events_key)
redis.call('SET', request_key, request_json, 'EX', ttl)
redis.call('HSET', status_key, unpack(ARGV, status_fields_from, status_fields_to))
redis.call('EXPIRE', status_key, ttl)
return {'created', ''}
"""

    def parse(self, reply: Any) -> str | None:
        """None when created, else the stored epoch."""
        return None if reply[0] == "created" else str(reply[1])


# -- claim -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MessageClaimScript(ScriptCall[Claim]):
    """Message half of a claim (``ClaimScript`` without the indexes: the control side lists the
    message as running before, and drops it from pending after a start)."""

    status_key: str = key()
    lock_key: str = key()
    request_key: str = key()
    now_iso: str
    worker: str
    owner: str
    lease_ms: int
    max_resumes: int
    pid: int

    BODY = """
local status = redis.call('HGET', status_key, 'status')
if not status then return {'gone'} end
local outcome
if status == 'pending' then
  redis.call('HSET', status_key, 'status', 'processing', 'started_at', now_iso)
  outcome = 'start'
elseif status ~= 'processing' then
  return {status}
elseif redis.call('EXISTS', lock_key) == 1 then
  return {'locked'}
elseif redis.call('HINCRBY', status_key, 'resumes', 1) > max_resumes then
  outcome = 'exhausted'
else
  outcome = 'resume'
end
redis.call('HSET', status_key, 'updated_at', now_iso, 'worker', worker, 'worker_pid', pid)
redis.call('SET', lock_key, owner, 'PX', lease_ms)
return {outcome, redis.call('GET', request_key) or '', unpack(redis.call('HGETALL', status_key))}
"""

    def parse(self, reply: Any) -> Claim:
        """The outcome, and for a run the request and the status hash."""
        outcome, *rest = reply
        if not rest:
            return Claim(ClaimOutcome(outcome))
        request, flat = rest[0], rest[1:]
        status = dict(zip(flat[::2], flat[1::2], strict=True))
        return Claim(ClaimOutcome(outcome), status, json.loads(request) if request else None)
