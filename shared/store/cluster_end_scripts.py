"""Redis Cluster halves of an append, a finish and a delete (``WakingAppendScript`` … ``ForgetScript``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.store.appends import AppendScript
from shared.store.base import EXPIRE_WITH_LAST, Status, status_or_none
from shared.store.script import FieldValues, ScriptCall, key, optional_key, pairs, tail

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
