"""Appends: a running message's events (fenced on its lock's owner), and its terminal write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared import events as ev
from shared.keys import PENDING, RUNNING, message_keys
from shared.records import now_iso
from shared.store.base import (
    EXPIRE_WITH_LAST,
    PROCESSING,
    TERMINAL_STATUSES,
    Status,
    StoreCore,
    status_or_none,
)
from shared.store.script import FieldValues, ScriptCall, key, optional_key, pairs, tail


class Signal(Enum):
    """What an append answers the generation loop (the values are the append script's reply)."""

    #: Go on generating.
    GO_ON = 0
    #: A cancel was asked for: end the message as cancelled.
    CANCEL_ASKED = 1
    #: The message is no longer processing (deleted or ended) or no longer this run's: stop.
    GONE = -1
    #: Never from the store: a background writer's write failed (raised at the loop's next call).
    FAILED = -2


@dataclass(frozen=True, kw_only=True)
class AppendScript(ScriptCall[Signal]):
    """Append events of a processing message and set status fields; renews the writer's lease.

    Replies -1 (``GONE``) when the message is no longer processing or another run owns it now,
    else whether a cancel was asked for (1/0)."""

    status_key: str = key()
    events_key: str = key()
    cancel_key: str = key()
    lock_key: str = key()
    ttl: int
    maxlen: int
    #: The run that must hold the lock ('' = unchecked).
    owner: str = ""
    lease_ms: int = 1
    fields: FieldValues = pairs()  # noqa: RUF009  (a dataclasses.field)
    events: Sequence[str] = tail()

    BODY = """
if redis.call('HGET', status_key, 'status') ~= 'processing' then return -1 end
if owner ~= '' then
  if redis.call('GET', lock_key) ~= owner then return -1 end
  redis.call('PEXPIRE', lock_key, lease_ms)
end
if fields_n > 0 then redis.call('HSET', status_key, unpack(ARGV, fields_from, fields_to)) end
for i = events_from, #ARGV do
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
end
redis.call('EXPIRE', events_key, ttl)
return redis.call('EXISTS', cancel_key)
"""

    def parse(self, reply: Any) -> Signal:
        """The reply as a ``Signal``."""
        return Signal(int(reply))


@dataclass(frozen=True, kw_only=True)
class FinishScript(ScriptCall[Status | None]):
    """Append the final events and set a terminal status; every key gets the retention TTL, and
    the tenant's stored-bytes entry for the message now ends with it. Replies the status the
    message has afterwards (nil when it does not exist): ``new_status`` if this call ended it."""

    status_key: str = key()
    events_key: str = key()
    request_key: str = key()
    cancel_key: str = key()
    lock_key: str = key()
    running_key: str = key()
    pending_key: str = key()
    active_key: str = key()
    stored_key: str = key()
    sizes_key: str = key()
    idempotency_key: str | None = optional_key()
    retention: int
    maxlen: int
    new_status: str
    #: The status the message must have ('' = any live one).
    expected: str = ""
    now_iso: str
    #: The run that must hold the lock ('' = unchecked).
    owner: str = ""
    message_id: str
    fields: FieldValues = pairs()  # noqa: RUF009  (a dataclasses.field)
    events: Sequence[str] = tail()

    PRELUDE = EXPIRE_WITH_LAST
    BODY = """
local status = redis.call('HGET', status_key, 'status')
if not status then return false end
if status == 'completed' or status == 'cancelled' or status == 'error' then return status end
if expected ~= '' and status ~= expected then return status end
if owner ~= '' and redis.call('GET', lock_key) ~= owner then return status end
if fields_n > 0 then redis.call('HSET', status_key, unpack(ARGV, fields_from, fields_to)) end
for i = events_from, #ARGV do
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[i])
end
redis.call('HSET', status_key, 'status', new_status, 'updated_at', now_iso, 'completed_at', now_iso,
           'event_count', redis.call('XLEN', events_key))
redis.call('DEL', cancel_key, lock_key)
for _, set in ipairs({running_key, pending_key, active_key}) do redis.call('ZREM', set, message_id) end
for _, kept in ipairs({status_key, events_key, request_key}) do redis.call('EXPIRE', kept, retention) end
if idempotency_key then redis.call('EXPIRE', idempotency_key, retention) end
local kept_until = tonumber(redis.call('TIME')[1]) + retention
if redis.call('ZADD', stored_key, 'XX', 'CH', kept_until, message_id) == 1 then
  expire_with_last(stored_key, sizes_key)
end
return new_status
"""

    def parse(self, reply: Any) -> Status | None:
        """The status afterwards (None: no such message)."""
        return status_or_none(reply)


class AppendStore(StoreCore):
    """Writing a running message's events and ending it."""

    def append(
        self,
        message_id: str,
        events: Sequence[ev.Event],
        fields: FieldValues | None = None,
        *,
        owner: str = "",
        lease_ms: int = 0,
    ) -> Signal:
        """Append events of a processing message (and set status fields) in one round trip;
        answers ``GO_ON``, ``CANCEL_ASKED``, or ``GONE`` when the message is no longer
        processing (deleted or ended) or no longer ``owner``'s: the writer must stop."""
        keys = message_keys(message_id)
        call = AppendScript(
            status_key=keys.status,
            events_key=keys.events,
            cancel_key=keys.cancel,
            lock_key=keys.lock,
            ttl=self.active_ttl_seconds,
            maxlen=self.stream_maxlen,
            owner=owner,
            lease_ms=lease_ms or 1,
            fields=fields or {},
            events=[ev.encode(event) for event in events],
        )
        return self.scripts.run(call)

    def finish(
        self,
        message_id: str,
        status: str,
        events: Sequence[ev.Event],
        fields: FieldValues | None = None,
        *,
        expected: str = PROCESSING,
        owner: str = "",
        wait_ms: int = 0,
    ) -> Status | None:
        """Append the final events and set a terminal status atomically; every key gets the
        retention TTL. Returns the status afterwards: ``status`` if this call ended it.

        With ``wait_ms``, then waits up to that long for a replica to acknowledge the write
        (``WAIT 1``, on the same connection); a failover after that cannot lose the ending."""
        assert status in TERMINAL_STATUSES
        keys = message_keys(message_id)
        tenant = self._tenant_keys(message_id)
        call = FinishScript(
            status_key=keys.status,
            events_key=keys.events,
            request_key=keys.request,
            cancel_key=keys.cancel,
            lock_key=keys.lock,
            running_key=RUNNING,
            pending_key=PENDING,
            active_key=tenant.active,
            stored_key=tenant.stored,
            sizes_key=tenant.sizes,
            idempotency_key=tenant.idempotency,
            retention=self.retention_seconds,
            maxlen=self.stream_maxlen,
            new_status=status,
            expected=expected,
            now_iso=now_iso(),
            owner=owner,
            message_id=message_id,
            fields=fields or {},
            events=[ev.encode(event) for event in events],
        )
        if wait_ms <= 0:
            return self.scripts.run(call)
        pipe = self.redis.pipeline(transaction=False)
        self.scripts.send(call, client=pipe)
        return call.parse(pipe.wait(1, wait_ms).execute()[0])
