"""Reading a message's status, request and stream, and the workers' heartbeats (no state changes)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from shared import events as ev
from shared.keys import WORKER_ALIVE_SECONDS, WORKERS, message_keys
from shared.records import CURSOR, InvalidCursor, StoredEvent, StreamCursor, StreamGone, stored_event


class StoreReads:
    """The reads of ``MessageStore``, no scripts: a message's keys on ``messages``, the workers'
    heartbeats on ``redis`` (the control Redis; the same client unless in Redis Cluster mode)."""

    redis: redis.Redis
    messages: Any

    def all_events(self, message_id: str) -> list[StoredEvent]:
        """Every stored event of the message, oldest first."""
        entries = self.messages.xrange(message_keys(message_id).events)
        return [stored_event(entry_id, data) for entry_id, data in entries]

    # -- reading -----------------------------------------------------------

    def get_status(self, message_id: str) -> dict[str, str] | None:
        """The status hash, or None when the message does not exist."""
        status: dict[str, str] = self.messages.hgetall(message_keys(message_id).status)
        return status or None

    def get_field(self, message_id: str, name: str) -> str | None:
        """One field of the status hash."""
        value: str | None = self.messages.hget(message_keys(message_id).status, name)
        return value

    def get_request(self, message_id: str) -> dict[str, Any] | None:
        """The stored request body."""
        raw = self.messages.get(message_keys(message_id).request)
        return json.loads(raw) if raw else None

    def check_cursor(self, message_id: str, cursor: str) -> StreamCursor:
        """Validate a resume cursor: well-formed and naming a stored event (``0`` = start).

        A cursor at the terminal event is ``ended``: nothing follows it, so there is nothing
        to wait for."""
        if not CURSOR.match(cursor):
            raise InvalidCursor(f"malformed event id {cursor!r}; expected <ms>-<seq>")
        if cursor in ("0", "0-0"):
            return StreamCursor("0-0")
        found = self.messages.xrange(message_keys(message_id).events, cursor, cursor, count=1)
        if not found:
            raise InvalidCursor(f"event id {cursor!r} is not part of this stream")
        entry_id, data = found[0]
        return StreamCursor(cursor, ended=ev.is_terminal(stored_event(entry_id, data).type))

    def read_events(
        self,
        message_id: str,
        after: str,
        *,
        block_ms: int | None = None,
        count: int = 512,
        epoch: str | None = None,
    ) -> list[StoredEvent]:
        """Events strictly after ``after``; with ``block_ms``, wait that long for one.

        With ``epoch``, the read also checks (in the same round trip) that the message is still
        the one created with that stamp, and raises ``StreamGone`` when it is not."""
        keys = message_keys(message_id)
        if epoch is None:
            reply = self.messages.xread({keys.events: after}, count=count, block=block_ms)
        else:
            pipe = self.messages.pipeline(transaction=False)
            pipe.xread({keys.events: after}, count=count, block=block_ms)
            pipe.hmget(keys.status, "status", "epoch")
            reply, (status, found) = pipe.execute()
            if status is None or (found or "") != epoch:
                raise StreamGone(message_id)
        if not reply:
            return []
        _, entries = reply[0]
        return [stored_event(entry_id, data) for entry_id, data in entries]

    def is_current(self, message_id: str, epoch: str) -> bool:
        """True while the message exists and is the one created with ``epoch``."""
        status, found = self.messages.hmget(message_keys(message_id).status, "status", "epoch")
        return status is not None and (found or "") == epoch

    def ttls(self, message_id: str) -> dict[str, int]:
        """The TTL of each existing key of the message (-1 = none), for checks and tests."""
        keys = message_keys(message_id).all()
        pipe = self.messages.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        return {key: ttl for key, ttl in zip(keys, pipe.execute(), strict=True) if ttl != -2}

    # -- workers -----------------------------------------------------------

    def worker_heartbeat(self, hostname: str) -> None:
        """Record that worker ``hostname`` is alive now."""
        self.redis.zadd(WORKERS, {hostname: time.time()})

    def worker_gone(self, hostname: str) -> None:
        """Forget worker ``hostname`` (it shut down)."""
        self.redis.zrem(WORKERS, hostname)

    def live_workers(self) -> list[str]:
        """Hostnames of the workers whose heartbeat is recent."""
        since = time.time() - WORKER_ALIVE_SECONDS
        workers: list[str] = self.redis.zrangebyscore(WORKERS, since, "+inf")
        return workers
