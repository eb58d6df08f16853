"""Per-key limits: the 429 a caller gets when its tenant's token bucket is empty, or when it
holds too many open streams.

A key may start ``SLUICE_RATE_LIMIT_PER_MINUTE`` messages a minute, in bursts of up to
``SLUICE_RATE_LIMIT_BURST`` (default: the per-minute figure). Over it: 429
``rate_limit_error`` with ``Retry-After``. The bucket lives in Redis and is taken inside the
store's create script, in the same round trip as concurrency, queue depth and the create.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from api.errors import ApiError
from shared.keys import ANONYMOUS, tenant_streams
from shared.store.script import ScriptCall, Scripts, key

T = TypeVar("T")


class RateLimited(ApiError):
    """429 rate_limit_error with ``Retry-After`` (whole seconds, at least 1)."""

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(429, message, headers={"Retry-After": str(seconds)})


class TooManyStreams(ApiError):
    """429 rate_limit_error: the key holds its maximum of open SSE streams."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            429,
            f"This key already holds {limit} open streams (SLUICE_MAX_STREAMS_PER_KEY); close one first.",
            headers={"Retry-After": "1"},
        )


@dataclass(frozen=True, kw_only=True)
class AcquireScript(ScriptCall[bool]):
    """Drop lapsed leases (an API process that died), then take a slot if one is free."""

    streams_key: str = key()
    now: float
    limit: int
    lease_end: float
    token: str
    key_ttl: int

    BODY = """
redis.call('ZREMRANGEBYSCORE', streams_key, '-inf', now)
if redis.call('ZCARD', streams_key) >= limit then return 0 end
redis.call('ZADD', streams_key, lease_end, token)
redis.call('EXPIRE', streams_key, key_ttl)
return 1
"""

    def parse(self, reply: Any) -> bool:
        """Whether a slot was taken."""
        return bool(reply)


class StreamSlot:
    """One open SSE stream of a tenant, held as a lease in Redis: renewed while the stream runs,
    released when it ends, lapsing by itself if the API process dies."""

    def __init__(self, client: redis.Redis, key: str, token: str, lease_seconds: float) -> None:
        self._client = client
        self._key = key
        self._token = token
        self._lease = lease_seconds
        self._renew_at = time.monotonic() + lease_seconds / 3

    def renew_if_due(self) -> None:
        """Extend the lease when a third of it has passed (a Redis call at most that often)."""
        now = time.monotonic()
        if now < self._renew_at:
            return
        self._renew_at = now + self._lease / 3
        with contextlib.suppress(redis.RedisError):  # an outage: the stream goes on, the lease may lapse
            self._client.zadd(self._key, {self._token: time.time() + self._lease}, xx=True)

    def release(self) -> None:
        """Give the slot back."""
        with contextlib.suppress(redis.RedisError):
            self._client.zrem(self._key, self._token)


class StreamSlots:
    """Open SSE streams per key, counted in Redis across every API process (``SLUICE_MAX_STREAMS_PER_KEY``).

    Each stream holds a tail's share of Redis connections and a socket: without a bound, one key
    could exhaust Redis ``maxclients`` or the API's connections for everyone.
    """

    def __init__(self, client: redis.Redis, limit: int, lease_seconds: float) -> None:
        self._client = client
        self._limit = limit
        self._lease = lease_seconds
        self._scripts = Scripts(client, (AcquireScript,), flags=True)

    def acquire(self, tenant: str) -> StreamSlot | None:
        """A slot for one more stream of ``tenant``; raises ``TooManyStreams`` when none is free.
        None when the limit is off (0) or auth is off (one tenant)."""
        if not self._limit or tenant == ANONYMOUS:
            return None
        key, token, now = tenant_streams(tenant), secrets.token_hex(8), time.time()
        ttl = math.ceil(self._lease * 2)
        call = AcquireScript(
            streams_key=key, now=now, limit=self._limit, lease_end=now + self._lease, token=token, key_ttl=ttl
        )
        if not self._scripts.run(call):
            raise TooManyStreams(self._limit)
        return StreamSlot(self._client, key, token, self._lease)


def holding(slot: StreamSlot | None, chunks: Iterator[T]) -> Iterator[T]:
    """``chunks``, renewing ``slot`` as they go (the SSE body yields at least once a ping interval)."""
    for chunk in chunks:
        if slot is not None:
            slot.renew_if_due()
        yield chunk
