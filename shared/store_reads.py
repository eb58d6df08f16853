"""Reading a message's status and request, and the workers' heartbeats (no state changes).

A message's stream is read only by the stream runtime (``shared/streams``)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from shared.keys import WORKER_ALIVE_SECONDS, WORKERS, message_keys


class StoreReads:
    """The reads of ``MessageStore``, no scripts: a message's keys on ``messages``, the workers'
    heartbeats on ``redis`` (the control Redis; the same client unless in Redis Cluster mode)."""

    redis: redis.Redis
    messages: Any

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
