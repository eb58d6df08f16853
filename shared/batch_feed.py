"""Feeding Message Batches: a window of each batch's requests becomes queued messages.

Each batch gets ``window`` requests in flight, shared by the active batches of its tenant;
``max_inflight`` caps all batches together so interactive traffic keeps the rest of the
workers. A batch's first ``head_requests`` run in a higher band than the rest.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from shared.batch_model import IN_PROGRESS, request_message_id
from shared.batch_scripts import Advance, AdvanceScript
from shared.broker import TaskMessages
from shared.keys import BATCHES_ACTIVE, batch_keys, scoped_id
from shared.models import ModelRegistry
from shared.priority import Placement
from shared.store import MessageStore
from shared.store.script import Scripts

#: The band of a batch's first ``head`` requests and of the rest; both below interactive traffic
#: (the default priority's band is 5).
HEAD_BAND = 6
TAIL_BAND = 8


@dataclass(frozen=True)
class Fed:
    """What one feed of a batch did."""

    created: int
    stopped: bool = False


class BatchFeeding:
    """The feeding side of ``BatchStore`` (a mixin: the store sets these attributes)."""

    redis: redis.Redis
    window: int
    head_requests: int
    max_inflight: int
    scripts: Scripts

    def feed(self, sid: str, store: MessageStore, tasks: TaskMessages, registry: ModelRegistry) -> Fed:
        """Top the batch's window up: create its next requests as messages (each with its task,
        as ``/async`` does), then advance the cursor if nobody else fed it meanwhile."""
        keys = batch_keys(sid)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.meta, "status", "fed", "total", "tenant", "id")
        pipe.scard(keys.inflight)
        (status, fed_raw, total_raw, tenant, batch_id), inflight = pipe.execute()
        if status != IN_PROGRESS:
            return Fed(0, stopped=True)
        fed, total = int(fed_raw), int(total_raw)
        count = min(self.room(sid, inflight), total - fed)
        if count <= 0:
            return Fed(0)
        pipe.lrange(keys.requests, fed, fed + count - 1)
        pipe.lrange(keys.custom_ids, fed, fed + count - 1)
        params_list, custom_ids = pipe.execute()
        message_ids = []
        for offset, (raw, custom_id) in enumerate(zip(params_list, custom_ids, strict=True)):
            index = fed + offset
            message_sid = scoped_id(tenant, request_message_id(batch_id, custom_id))
            params = json.loads(raw)
            placement = self._placement(params, registry, index)
            fields = batch_message_fields(params, placement, sid, batch_id, custom_id, index)
            task = tasks.generate(message_sid, placement.queue, placement.band, "")
            store.create(message_sid, params, fields, tenant=tenant, task=task)
            message_ids.append(message_sid)
        advance = AdvanceScript(
            meta_key=keys.meta,
            inflight_key=keys.inflight,
            expected_fed=fed,
            new_fed=fed + count,
            message_sids=tuple(message_ids),
        )
        advanced = self.scripts.run(advance)
        if advanced is Advance.STOPPED:
            # Cancelled meanwhile: what this call created is not counted anywhere; stop it.
            for message_sid in message_ids:
                store.cancel(message_sid)
        if advanced is not Advance.ADVANCED:
            return Fed(0)
        return Fed(count)

    def _placement(self, params: dict[str, Any], registry: ModelRegistry, index: int) -> Placement:
        spec = registry.resolve(params.get("model", "default"))
        queue = spec.queue if spec is not None else "sluice.local"
        band = HEAD_BAND if index < self.head_requests else TAIL_BAND
        return Placement(queue=queue, band=band, priority=band - 5)

    def room(self, sid: str, inflight: int) -> int:
        """How many more requests of ``sid`` may be fed now: its window is ``window`` shared by the
        active batches of its tenant (at least one each), so a tenant with many batches gets no
        more of the queue than one with one; and with ``max_inflight``, all batches together
        never hold more than that many messages queued or running (the rest of the workers'
        slots stay free for interactive traffic)."""
        active = self.active()
        tenant = sid.rpartition("/")[0]
        same = sum(1 for other in active if other.rpartition("/")[0] == tenant)
        room = max(1, self.window // max(1, same)) - inflight
        if self.max_inflight and room > 0:
            pipe = self.redis.pipeline(transaction=False)
            for other in active:
                pipe.scard(batch_keys(other).inflight)
            room = min(room, self.max_inflight - sum(pipe.execute()))
        return room

    def active(self) -> list[str]:
        """Storage ids of batches in progress or canceling, oldest first."""
        found: list[str] = self.redis.zrange(BATCHES_ACTIVE, 0, -1)
        return found


def batch_message_fields(
    params: dict[str, Any], placement: Placement, sid: str, batch_id: str, custom_id: str, index: int
) -> dict[str, str | int | float]:
    """The status fields of a batch request's message: those of ``/async`` plus its batch."""
    metadata = params.get("metadata")
    thinking = params.get("thinking") or {}
    return {
        "model": params.get("model", "default"),
        "requested_model": params.get("model", "default"),
        "priority": placement.priority,
        "queue": placement.queue,
        "band": placement.band,
        "message_count": len(params.get("messages") or ()),
        "thinking_enabled": int(bool(thinking.get("enabled") or thinking.get("type") == "enabled")),
        "correlation_id": "",
        "request_metadata": json.dumps(metadata) if metadata else "{}",
        "stream_type": "chat_completion",
        "epoch": secrets.token_hex(8),
        "batch_id": batch_id,
        "batch_key": sid,
        "custom_id": custom_id,
        "batch_index": index,
    }
