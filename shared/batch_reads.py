"""Reading Message Batches: their meta hashes, the tenant's list, the results file, a requests page."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from shared.batch_model import CHUNK, request_message_id
from shared.batch_results import CANCELED, errored_line
from shared.keys import batch_keys, message_keys, scoped_id, tenant_batches


class BatchReading:
    """The read side of ``BatchStore`` (a mixin: it needs only the Redis client)."""

    redis: redis.Redis

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
