"""What follows a message's end: its result in its batch, and its webhook event, each once.

Called by the worker right after a run ends, by the API after a cancel that ended a pending
message, and by the feeder's sweep for anything those missed (a worker killed between the
terminal write and this call): recording is idempotent (the batch's in-flight ``SREM``, the
status hash's ``webhooks_emitted`` flag), so being called twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.batch_results import result_line
from shared.batches import BatchStore, Recorded
from shared.keys import message_keys, public_id, webhook_endpoints
from shared.store import ANONYMOUS, TERMINAL_STATUSES, MessageStore
from shared.store.script import ScriptCall, key
from shared.webhooks import MESSAGE_EVENTS, EventType, WebhookStore


@dataclass(frozen=True, kw_only=True)
class FlagEmittedScript(ScriptCall[bool]):
    """Mark a message's webhook event as emitted, on an existing status hash only (never
    re-creating an expired one); True when this call set the flag."""

    status_key: str = key()

    BODY = """
if redis.call('EXISTS', status_key) == 0 then return 0 end
return redis.call('HSETNX', status_key, 'webhooks_emitted', 1)
"""

    def parse(self, reply: Any) -> bool:
        """Whether the flag was set now."""
        return bool(reply)


@dataclass(frozen=True)
class Ended:
    """What recording an end did: the message's batch (storage id), and the webhook deliveries queued."""

    batch_sid: str | None = None
    deliveries: int = 0


@dataclass(frozen=True)
class Outcomes:
    """The stores an end touches, bound together once per process."""

    store: MessageStore
    batches: BatchStore
    hooks: WebhookStore

    def message_ended(self, message_sid: str, status: dict[str, str] | None = None) -> Ended:
        """Record the end of ``message_sid`` if it is terminal."""
        status = status if status is not None else self.store.get_status(message_sid)
        if status is None or status.get("status") not in TERMINAL_STATUSES:
            return Ended()
        deliveries = 0
        tenant = status.get("tenant") or ANONYMOUS
        flag = FlagEmittedScript(status_key=message_keys(message_sid).status)
        if self.store.redis.hlen(webhook_endpoints(tenant)) and self.store.message_scripts.run(flag):
            deliveries += self.hooks.emit(tenant, MESSAGE_EVENTS[status["status"]], public_id(message_sid))
        batch_sid = status.get("batch_key")
        if batch_sid:
            kind, line = result_line(self.store, message_sid, status)
            index = int(status.get("batch_index") or 0)
            deliveries += self.record(batch_sid, message_sid, index, kind, line, tenant)
        return Ended(batch_sid or None, deliveries)

    def record(self, batch_sid: str, message_sid: str, index: int, kind: str, line: str, tenant: str) -> int:
        """Record one result; the record that completes the batch sends ``batch.ended`` (returns the
        deliveries that queued)."""
        recorded = self.batches.record(batch_sid, message_sid, index, kind, line)
        return self.batch_ended(batch_sid, tenant) if recorded is Recorded.ENDED else 0

    def batch_ended(self, batch_sid: str, tenant: str) -> int:
        """Send ``batch.ended`` for a batch that just ended; returns the deliveries queued."""
        return self.hooks.emit(tenant, EventType.BATCH_ENDED, public_id(batch_sid))
