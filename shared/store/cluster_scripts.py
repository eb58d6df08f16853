"""The store's scripts split in halves for Redis Cluster (``shared.store.cluster``).

A *message half* touches only the keys of one message (one hash slot, ``{<storage id>}``) and
runs on the cluster; a *control half* touches only the control Redis (indexes, tenant counters,
idempotency, the broker). Every message half that writes the stream also ``SPUBLISH``es the new
entry id on the message's wake channel (``MessageKeys.wake``, same slot), which wakes the API
processes' cluster tail readers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.records import Admission, AdmissionOutcome, Claim, ClaimOutcome
from shared.store.admission import TAKE_TOKEN
from shared.store.appends import AppendScript
from shared.store.base import EXPIRE_WITH_LAST, Status, status_or_none
from shared.store.script import FieldValues, ScriptCall, key, optional_key, pairs, tail

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


# -- append, finish ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WakingAppendScript(AppendScript):
    """``AppendScript`` that also publishes the last new entry id on the message's wake channel."""

    wake_channel: str

    BODY = """
if redis.call('HGET', status_key, 'status') ~= 'processing' then return -1 end
if owner ~= '' then
  if redis.call('GET', lock_key) ~= owner then return -1 end
  redis.call('PEXPIRE', lock_key, lease_ms)
end
if fields_n > 0 then redis.call('HSET', status_key, unpack(ARGV, fields_from, fields_to)) end
local last
for i = events_from, #ARGV do
  last = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
end
redis.call('EXPIRE', events_key, ttl)
if last then redis.call('SPUBLISH', wake_channel, last) end
return redis.call('EXISTS', cancel_key)
"""


@dataclass(frozen=True)
class Ended:
    """What a message half of an end found: the status afterwards, and what its control half needs."""

    status: Status | None
    tenant: str
    idempotency_key: str | None


@dataclass(frozen=True, kw_only=True)
class MessageFinishScript(ScriptCall[Ended]):
    """Message half of a finish (``FinishScript`` without the indexes and tenant keys): the final
    events, the terminal status, every key's retention; the wake. Replies the status afterwards
    with the tenant and idempotency key the control half (``FinishControlScript``) needs."""

    status_key: str = key()
    events_key: str = key()
    request_key: str = key()
    cancel_key: str = key()
    lock_key: str = key()
    retention: int
    maxlen: int
    new_status: str
    expected: str = ""
    now_iso: str
    owner: str = ""
    wake_channel: str
    fields: FieldValues = pairs()  # noqa: RUF009  (a dataclasses.field)
    events: Sequence[str] = tail()

    BODY = """
local status, tenant, idem = unpack(redis.call('HMGET', status_key, 'status', 'tenant', 'idem_key'))
if not status then return {'', '', ''} end
tenant, idem = tenant or '', idem or ''
if status == 'completed' or status == 'cancelled' or status == 'error' then return {status, tenant, idem} end
if expected ~= '' and status ~= expected then return {status, tenant, idem} end
if owner ~= '' and redis.call('GET', lock_key) ~= owner then return {status, tenant, idem} end
if fields_n > 0 then redis.call('HSET', status_key, unpack(ARGV, fields_from, fields_to)) end
local last
for i = events_from, #ARGV do
  last = redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
end
redis.call('HSET', status_key, 'status', new_status, 'updated_at', now_iso, 'completed_at', now_iso,
           'event_count', redis.call('XLEN', events_key))
redis.call('DEL', cancel_key, lock_key)
for _, kept in ipairs({status_key, events_key, request_key}) do redis.call('EXPIRE', kept, retention) end
if last then redis.call('SPUBLISH', wake_channel, last) end
return {new_status, tenant, idem}
"""

    def parse(self, reply: Any) -> Ended:
        """The status afterwards (None: no such message), tenant and idempotency key."""
        status, tenant, idem = reply
        return Ended(status_or_none(status), str(tenant), str(idem) or None)


@dataclass(frozen=True, kw_only=True)
class FinishControlScript(ScriptCall[None]):
    """Control half of a finish: out of the indexes and the tenant's concurrency; the
    idempotency record and the tenant's stored-bytes entry now end with the retention."""

    running_key: str = key()
    pending_key: str = key()
    active_key: str = key()
    stored_key: str = key()
    sizes_key: str = key()
    idempotency_key: str | None = optional_key()
    message_id: str
    retention: int

    PRELUDE = EXPIRE_WITH_LAST
    BODY = """
for _, set in ipairs({running_key, pending_key, active_key}) do redis.call('ZREM', set, message_id) end
if idempotency_key then redis.call('EXPIRE', idempotency_key, retention) end
local kept_until = tonumber(redis.call('TIME')[1]) + retention
if redis.call('ZADD', stored_key, 'XX', 'CH', kept_until, message_id) == 1 then
  expire_with_last(stored_key, sizes_key)
end
return 1
"""

    def parse(self, reply: Any) -> None:
        """Nothing to report."""


# -- delete ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MessageDeleteScript(ScriptCall[Ended]):
    """Message half of a delete: the keys removed, the tombstone and its wake (which end every
    tail of the stream, as in ``DeleteScript``). Replies ``Ended`` with status None when the
    message did not exist, else its status before and what the control half needs."""

    status_key: str = key()
    events_key: str = key()
    request_key: str = key()
    lock_key: str = key()
    cancel_key: str = key()
    tombstone: str
    tombstone_ttl_ms: int
    wake_channel: str

    BODY = """
local status, tenant, idem = unpack(redis.call('HMGET', status_key, 'status', 'tenant', 'idem_key'))
if not status then return {'', '', ''} end
redis.call('DEL', status_key, events_key, request_key, lock_key, cancel_key)
local last = redis.call('XADD', events_key, '*', 'd', tombstone)
redis.call('PEXPIRE', events_key, tombstone_ttl_ms)
redis.call('SPUBLISH', wake_channel, last)
return {status, tenant or '', idem or ''}
"""

    def parse(self, reply: Any) -> Ended:
        """The status it had (None: it did not exist), tenant and idempotency key."""
        status, tenant, idem = reply
        return Ended(status_or_none(status), str(tenant), str(idem) or None)


@dataclass(frozen=True, kw_only=True)
class ForgetScript(ScriptCall[None]):
    """Control half of a delete, and the release of a create that never wrote its message: out
    of the indexes and the tenant's concurrency, its stored bytes released, its idempotency
    record deleted (when given)."""

    running_key: str = key()
    pending_key: str = key()
    active_key: str = key()
    stored_key: str = key()
    sizes_key: str = key()
    idempotency_key: str | None = optional_key()
    message_id: str

    PRELUDE = EXPIRE_WITH_LAST
    BODY = """
for _, set in ipairs({running_key, pending_key, active_key}) do redis.call('ZREM', set, message_id) end
if idempotency_key then redis.call('DEL', idempotency_key) end
if redis.call('ZREM', stored_key, message_id) == 1 then
  local size = tonumber(redis.call('HGET', sizes_key, message_id)) or 0
  redis.call('HINCRBY', sizes_key, '#total', -size)
  redis.call('HDEL', sizes_key, message_id)
  expire_with_last(stored_key, sizes_key)
end
return 1
"""

    def parse(self, reply: Any) -> None:
        """Nothing to report."""


# -- leases ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MessageRenewScript(ScriptCall[bool]):
    """Message half of a lease renewal: extend ``owner``'s lock; False when it lost it."""

    lock_key: str = key()
    owner: str
    lease_ms: int

    BODY = """
if redis.call('GET', lock_key) ~= owner then return 0 end
redis.call('PEXPIRE', lock_key, lease_ms)
return 1
"""

    def parse(self, reply: Any) -> bool:
        """Whether the lease is still ``owner``'s."""
        return bool(reply)


@dataclass(frozen=True)
class ReapView:
    """What the reaper needs of one message: its status, its lock's remaining ms, its queue."""

    status: Status | None
    lock_ms: int
    queue: str
    band: int


@dataclass(frozen=True, kw_only=True)
class MessageReapReadScript(ScriptCall[ReapView]):
    """What the reaper reads of a message listed as running (it acts on the control Redis)."""

    status_key: str = key()
    lock_key: str = key()

    BODY = """
local status, queue, band = unpack(redis.call('HMGET', status_key, 'status', 'queue', 'band'))
return {status or '', redis.call('PTTL', lock_key), queue or '', band or '0'}
"""

    def parse(self, reply: Any) -> ReapView:
        """The view."""
        status, pttl, queue, band = reply
        return ReapView(status_or_none(status), int(pttl), str(queue), int(band or 0))


#: Every script that runs on the cluster: each must name keys of one message only (a unit test
#: checks every call the cluster store makes).
MESSAGE_SCRIPTS: tuple[type[ScriptCall[Any]], ...] = (
    MessageCreateScript,
    MessageClaimScript,
    WakingAppendScript,
    MessageFinishScript,
    MessageDeleteScript,
    MessageRenewScript,
    MessageReapReadScript,
)
#: The control halves (on the control Redis).
CONTROL_SCRIPTS: tuple[type[ScriptCall[Any]], ...] = (AdmitScript, FinishControlScript, ForgetScript)
