"""Removal: cancelling a message (ended at once when pending, flagged when running) and deleting it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.ending import Ending, StreamSoFar, ending_events
from shared.keys import PENDING, RUNNING, message_keys
from shared.records import TOMBSTONE, TOMBSTONE_TTL_MS
from shared.store.appends import AppendStore
from shared.store.base import CANCELLED, EXPIRE_WITH_LAST, Status, status_or_none
from shared.store.base import PENDING as PENDING_STATUS
from shared.store.base import PROCESSING as PROCESSING_STATUS
from shared.store.script import ScriptCall, key, optional_key

#: How long a cancel flag lives; the generation that should see it is long over by then.
CANCEL_FLAG_TTL_SECONDS = 3600


@dataclass(frozen=True, kw_only=True)
class FlagCancelScript(ScriptCall[Status | None]):
    """Set the cancel flag of a running message (its generation loop sees it at its next
    append); replies the message's status (nil: it does not exist)."""

    status_key: str = key()
    cancel_key: str = key()
    flag_ttl: int

    BODY = """
local status = redis.call('HGET', status_key, 'status')
if status == 'processing' then redis.call('SET', cancel_key, '1', 'EX', flag_ttl) end
return status
"""

    def parse(self, reply: Any) -> Status | None:
        """The status now (None: no such message)."""
        return status_or_none(reply)


@dataclass(frozen=True, kw_only=True)
class DeleteScript(ScriptCall[bool]):
    """Remove a message's keys and release its stored bytes; replies 1 if it existed.

    A running generation stops at its next append, which finds no status (and its lease renewal
    finds no lock). The stream is replaced by a one-entry tombstone that lives a few seconds:
    its XADD wakes every blocked tail of the stream, in every API process, which then finds the
    status gone and ends its observers (the tombstone itself is never sent: see ``StreamGone``).
    """

    status_key: str = key()
    events_key: str = key()
    request_key: str = key()
    lock_key: str = key()
    cancel_key: str = key()
    running_key: str = key()
    pending_key: str = key()
    active_key: str = key()
    stored_key: str = key()
    sizes_key: str = key()
    idempotency_key: str | None = optional_key()
    message_id: str
    tombstone: str
    tombstone_ttl_ms: int

    PRELUDE = EXPIRE_WITH_LAST
    BODY = """
if redis.call('EXISTS', status_key) == 0 then return 0 end
redis.call('DEL', status_key, events_key, request_key, lock_key, cancel_key)
if idempotency_key then redis.call('DEL', idempotency_key) end
for _, set in ipairs({running_key, pending_key, active_key}) do redis.call('ZREM', set, message_id) end
if redis.call('ZREM', stored_key, message_id) == 1 then
  local size = tonumber(redis.call('HGET', sizes_key, message_id)) or 0
  redis.call('HINCRBY', sizes_key, '#total', -size)
  redis.call('HDEL', sizes_key, message_id)
  expire_with_last(stored_key, sizes_key)
end
redis.call('XADD', events_key, '*', 'd', tombstone)
redis.call('PEXPIRE', events_key, tombstone_ttl_ms)
return 1
"""

    def parse(self, reply: Any) -> bool:
        """Whether the message existed."""
        return bool(reply)


class RemovalStore(AppendStore):
    """Cancelling and deleting messages."""

    def cancel(self, message_id: str) -> Status | None:
        """Cancel: a pending message ends at once with a well-formed cancelled stream, a
        processing one gets the flag its generation loop checks. Returns the status now."""
        status = status_or_none(self.get_field(message_id, "status"))
        if status == PENDING_STATUS:
            model = self.get_field(message_id, "model") or "default"
            ending = ending_events(StreamSoFar(message_id, model, started=False), Ending.cancelled())
            status = self.finish(message_id, CANCELLED, ending, expected=PENDING_STATUS)
        if status == PROCESSING_STATUS:
            keys = message_keys(message_id)
            call = FlagCancelScript(
                status_key=keys.status, cancel_key=keys.cancel, flag_ttl=CANCEL_FLAG_TTL_SECONDS
            )
            status = self.scripts.run(call)
        return status

    def delete(self, message_id: str) -> bool:
        """Remove a message's status, request and events (a running generation stops)."""
        keys = message_keys(message_id)
        tenant = self._tenant_keys(message_id)
        call = DeleteScript(
            status_key=keys.status,
            events_key=keys.events,
            request_key=keys.request,
            lock_key=keys.lock,
            cancel_key=keys.cancel,
            running_key=RUNNING,
            pending_key=PENDING,
            active_key=tenant.active,
            stored_key=tenant.stored,
            sizes_key=tenant.sizes,
            idempotency_key=tenant.idempotency,
            message_id=message_id,
            tombstone=TOMBSTONE,
            tombstone_ttl_ms=TOMBSTONE_TTL_MS,
        )
        return self.scripts.run(call)
