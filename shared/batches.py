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
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from shared import batch_scripts as lua
from shared.batch_results import CANCELED, EXPIRED, RESULT_KINDS, errored_line
from shared.broker import TaskMessages
from shared.keys import (
    BATCHES_ACTIVE,
    batch_keys,
    message_keys,
    scoped_id,
    tenant_batches,
)
from shared.models import ModelRegistry
from shared.priority import Placement
from shared.settings import Settings
from shared.store import MessageStore, now_iso

IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"

#: Requests written per pipelined round trip at creation, and read per page of results.
CHUNK = 1000
#: The band of a batch's first ``head`` requests and of the rest; both below interactive traffic
#: (the default priority's band is 5).
HEAD_BAND = 6
TAIL_BAND = 8


def new_batch_id() -> str:
    """A unique batch id in Anthropic's style."""
    return "msgbatch_" + secrets.token_hex(12)


def request_message_id(batch_id: str, custom_id: str) -> str:
    """The public message id a batch request runs as."""
    return f"{batch_id}.{custom_id}"


@dataclass(frozen=True)
class BatchRequest:
    """One validated request of a batch."""

    custom_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Fed:
    """What one feed of a batch did."""

    created: int
    stopped: bool = False


class BatchStore:
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
        self._record = client.register_script(lua.RECORD)
        self._stop = client.register_script(lua.STOP)
        self._advance = client.register_script(lua.ADVANCE)

    @classmethod
    def for_settings(cls, client: redis.Redis, settings: Settings) -> BatchStore:
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
            "expires_at": _iso(expires),
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

    # -- reading -------------------------------------------------------------------------------

    def get(self, tenant: str, batch_id: str) -> dict[str, str] | None:
        """The meta hash of the tenant's batch, or None."""
        meta: dict[str, str] = self.redis.hgetall(batch_keys(scoped_id(tenant, batch_id)).meta)
        return meta or None

    def get_many(self, tenant: str, batch_ids: Sequence[str]) -> list[dict[str, str]]:
        """The meta hashes of the tenant's batches, in one round trip (missing ones left out)."""
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.hgetall(batch_keys(scoped_id(tenant, batch_id)).meta)
        return [meta for meta in (pipe.execute() if batch_ids else []) if meta]

    def list_ids(self, tenant: str) -> list[str]:
        """The tenant's batch ids, newest first (dropping those whose keys expired)."""
        ids: list[str] = self.redis.zrevrange(tenant_batches(tenant), 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.exists(batch_keys(scoped_id(tenant, batch_id)).meta)
        alive = pipe.execute() if ids else []
        gone = [b for b, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self.redis.zrem(tenant_batches(tenant), *gone)
        return [b for b, ok in zip(ids, alive, strict=True) if ok]

    def results(self, tenant: str, batch_id: str, meta: dict[str, str]) -> Iterator[str]:
        """The results file's lines (with newline), a page at a time: memory flat in the batch's size."""
        keys = batch_keys(scoped_id(tenant, batch_id))
        total = int(meta["total"])
        unfed_from = int(meta.get("unfed_from") or total)
        unfed_line = json.dumps({"type": meta.get("ending") or CANCELED})
        for start in range(0, total, CHUNK):
            end = min(start + CHUNK, total)
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(keys.custom_ids, start, end - 1)
            pipe.hmget(keys.results, [str(i) for i in range(start, end)])
            custom_ids, lines = pipe.execute()
            out = []
            for offset, (custom_id, line) in enumerate(zip(custom_ids, lines, strict=False)):
                if line is None:
                    line = (
                        unfed_line if start + offset >= unfed_from else errored_line("no result was recorded")
                    )
                out.append(f'{{"custom_id":{json.dumps(custom_id)},"result":{line}}}\n')
            yield "".join(out)

    def requests_page(
        self, tenant: str, batch_id: str, offset: int, limit: int, *, messages: Any = None
    ) -> list[dict[str, Any]]:
        """A page of the batch's requests: custom id, message id and where each stands now
        (``waiting`` until fed, then its message's status, or its result once recorded).
        ``messages``: the client of the message store when it is not this one (Redis Cluster
        mode, ``MessageStore.messages``)."""
        keys = batch_keys(scoped_id(tenant, batch_id))
        custom_ids: list[str] = self.redis.lrange(keys.custom_ids, offset, offset + limit - 1)
        message_ids = [request_message_id(batch_id, c) for c in custom_ids]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.results, [str(offset + i) for i in range(len(custom_ids))])
        elsewhere = messages is not None and messages is not self.redis
        reads = messages.pipeline(transaction=False) if elsewhere else pipe
        for message_id in message_ids:
            reads.hget(message_keys(scoped_id(tenant, message_id)).status, "status")
        results, *statuses = pipe.execute()
        if elsewhere:
            statuses = reads.execute()
        page = []
        for custom_id, message_id, result, state in zip(
            custom_ids, message_ids, results, statuses, strict=True
        ):
            shown = json.loads(result)["type"] if result else state or "waiting"
            page.append({"custom_id": custom_id, "message_id": message_id, "status": shown})
        return page

    def delete(self, tenant: str, batch_id: str) -> None:
        """Remove an ended batch's keys and its entry in the tenant's list."""
        sid = scoped_id(tenant, batch_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(*batch_keys(sid).all())
        pipe.zrem(tenant_batches(tenant), batch_id)
        pipe.zrem(BATCHES_ACTIVE, sid)
        pipe.execute()

    # -- stopping and recording ------------------------------------------------------------------

    def stop(self, sid: str, ending: str) -> tuple[bool, list[str]] | None:
        """Stop feeding ``sid`` (cancel: ``canceled``, deadline: ``expired``); returns (ended now,
        the in-flight message ids to cancel), or None when it was not in progress."""
        keys = batch_keys(sid)
        status = CANCELING if ending == CANCELED else IN_PROGRESS
        reply = self._stop(
            keys=[keys.meta, keys.results, keys.inflight, BATCHES_ACTIVE, *keys.all()],
            args=[now_iso(), self.retention_seconds, sid, ending, status],
        )
        if int(reply[0]) < 0:
            return None
        return bool(int(reply[0])), [str(m) for m in reply[1:]]

    def record(self, sid: str, message_sid: str, index: int, kind: str, line: str) -> tuple[bool, bool]:
        """Record the end of a batch's message once; returns (recorded now, the batch ended now)."""
        keys = batch_keys(sid)
        recorded, ended = self._record(
            keys=[keys.meta, keys.results, keys.inflight, BATCHES_ACTIVE, *keys.all()],
            args=[
                now_iso(),
                self.retention_seconds,
                sid,
                message_sid,
                index,
                kind,
                line,
                json.dumps({"type": EXPIRED}),
            ],
        )
        return bool(recorded), bool(ended)

    def inflight(self, sid: str) -> list[str]:
        """Storage ids of the batch's messages fed and not yet recorded."""
        members: set[str] = self.redis.smembers(batch_keys(sid).inflight)
        return sorted(members)

    # -- feeding -------------------------------------------------------------------------------

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
        advanced = self._advance(keys=[keys.meta, keys.inflight], args=[fed, fed + count, *message_ids])
        if not advanced:
            # Cancelled meanwhile: what this call created is not counted anywhere; stop it.
            if self.redis.hget(keys.meta, "status") != IN_PROGRESS:
                for message_sid in message_ids:
                    store.cancel(message_sid)
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


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix % 1 * 1000):03d}Z"
