"""The batch store: Message Batches in Redis, fed to the queue a window at a time.

A batch is a meta hash (state, counters, the feed cursor ``fed``), the list of its
requests' params and the list of their ``custom_id`` s, written in pipelined chunks; its
requests become ordinary messages (``<batch id>.<custom_id>``) only when the feeder moves
them into the queue, at most ``window`` at a time per batch. A message's end is recorded
once (``SREM`` from the in-flight set is the token): its result goes into the results hash
and the counters move; the record that completes the count ends the batch.

Lifecycle: ``in_progress`` → (``canceling``) → ``ended``. Cancel and expiry stop the feed
at once: every request not yet fed is counted ``canceled`` (or ``expired``) in the same
script, and the few in flight are cancelled as ordinary messages.

The store's read side is in ``batch_reads``, its feeding in ``batch_feed``; the vocabulary
(states, ids) in ``batch_model``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import redis

from shared.batch_feed import BatchFeeding, Fed
from shared.batch_model import (
    CANCELING,
    CHUNK,
    ENDED,
    IN_PROGRESS,
    BatchRequest,
    iso_time,
    new_batch_id,
    request_message_id,
)
from shared.batch_reads import BatchReading
from shared.batch_results import CANCELED, EXPIRED, RESULT_KINDS
from shared.batch_scripts import BATCH_SCRIPTS, Recorded, RecordScript, Stopped, StopScript
from shared.keys import BATCHES_ACTIVE, batch_keys, scoped_id, tenant_batches
from shared.settings import SharedSettings
from shared.store import now_iso
from shared.store.script import Scripts

__all__ = [
    "CANCELED",
    "CANCELING",
    "ENDED",
    "EXPIRED",
    "IN_PROGRESS",
    "RESULT_KINDS",
    "BatchRequest",
    "BatchStore",
    "Fed",
    "Recorded",
    "Stopped",
    "new_batch_id",
    "request_message_id",
]


class BatchStore(BatchReading, BatchFeeding):
    """Creates, reads, feeds and ends batches; one per process."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        expiry_seconds: int = 86400,
        retention_seconds: int = 86400,
        window: int = 8,
        head_requests: int = 20,
        max_inflight: int = 0,
    ) -> None:
        self.redis = client
        self.expiry_seconds = expiry_seconds
        self.retention_seconds = retention_seconds
        self.window = window
        self.head_requests = head_requests
        self.max_inflight = max_inflight
        self.scripts = Scripts(client, BATCH_SCRIPTS, flags=True)

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: SharedSettings) -> BatchStore:
        """The batch store with this deployment's expiry, retention, window and head."""
        return cls(
            client,
            expiry_seconds=settings.batch_expiry_seconds,
            retention_seconds=settings.batch_retention_seconds,
            window=settings.batch_window,
            head_requests=settings.batch_head_requests,
            max_inflight=settings.batch_max_inflight,
        )

    # -- creation ------------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        requests: Sequence[BatchRequest],
        *,
        batch_id: str | None = None,
        pause: Callable[[], None] = lambda: None,
    ) -> str:
        """Store a validated batch (pipelined, ``CHUNK`` requests a round trip, ``pause()`` between
        chunks so other requests of the process run); it becomes visible and fed only at the end."""
        batch_id = batch_id or new_batch_id()
        sid = scoped_id(tenant, batch_id)
        keys = batch_keys(sid)
        ttl = self.expiry_seconds + self.retention_seconds + 3600
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start : start + CHUNK]
            pipe.rpush(keys.requests, *(json.dumps(r.params, separators=(",", ":")) for r in chunk))
            pipe.rpush(keys.custom_ids, *(r.custom_id for r in chunk))
            pipe.expire(keys.requests, ttl)
            pipe.expire(keys.custom_ids, ttl)
            pipe.execute()
            pause()
        now, unix = now_iso(), time.time()
        expires = unix + self.expiry_seconds
        meta: dict[str | bytes, str | int | float] = {
            "id": batch_id,
            "tenant": tenant,
            "status": IN_PROGRESS,
            "created_at": now,
            "created_ts": unix,
            "expires_at": iso_time(expires),
            "expires_ts": expires,
            "total": len(requests),
            "fed": 0,
            "done": 0,
            **dict.fromkeys(RESULT_KINDS, 0),
        }
        tx = self.redis.pipeline(transaction=True)
        tx.hset(keys.meta, mapping=meta)
        tx.expire(keys.meta, ttl)
        tx.zadd(tenant_batches(tenant), {batch_id: unix})
        tx.zadd(BATCHES_ACTIVE, {sid: unix})
        tx.execute()
        return batch_id

    def delete(self, tenant: str, batch_id: str) -> None:
        """Remove an ended batch's keys and its entry in the tenant's list."""
        sid = scoped_id(tenant, batch_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*batch_keys(sid).all())
        pipe.zrem(tenant_batches(tenant), batch_id)
        pipe.zrem(BATCHES_ACTIVE, sid)
        pipe.execute()

    # -- stopping and recording ------------------------------------------------------------------

    def stop(self, sid: str, ending: str) -> Stopped | None:
        """Stop feeding ``sid`` (cancel: ``canceled``, deadline: ``expired``); returns whether that
        ended it and the in-flight message ids to cancel, or None when it was not in progress."""
        status = CANCELING if ending == CANCELED else IN_PROGRESS
        call = StopScript(
            **StopScript.batch(sid),
            now=now_iso(),
            retention=self.retention_seconds,
            ending=ending,
            new_status=status,
        )
        return self.scripts.run(call)

    def record(self, sid: str, message_sid: str, index: int, kind: str, line: str) -> Recorded:
        """Record the end of a batch's message once; says whether it counted now and ended the batch."""
        call = RecordScript(
            **RecordScript.batch(sid),
            now=now_iso(),
            retention=self.retention_seconds,
            message_sid=message_sid,
            index=index,
            kind=kind,
            line=line,
            expired_line=json.dumps({"type": EXPIRED}),
        )
        return self.scripts.run(call)

    def inflight(self, sid: str) -> list[str]:
        """Storage ids of the batch's messages fed and not yet recorded."""
        members: set[str] = self.redis.smembers(batch_keys(sid).inflight)
        return sorted(members)
