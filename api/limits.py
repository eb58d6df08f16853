"""Per-key rate limits: a token bucket in Redis, one Lua script, shared by every API process.

A key may start ``SLUICE_RATE_LIMIT_PER_MINUTE`` messages a minute, in bursts of up to
``SLUICE_RATE_LIMIT_BURST`` (default: the per-minute figure). Over it: 429
``rate_limit_error`` with ``Retry-After``. Concurrency and queue depth are checked inside
the store's create script, atomically with the create.
"""

from __future__ import annotations

import math
import time

import redis

from api.errors import ApiError
from shared.keys import rate_bucket

# KEYS: bucket. ARGV: capacity, refill per second, now (s). Returns {allowed, retry_after_ms}.
_TAKE = """
local capacity, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, wait}
"""


class RateLimited(ApiError):
    """429 rate_limit_error with ``Retry-After`` (whole seconds, at least 1)."""

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(429, message, headers={"Retry-After": str(seconds)})


class RateLimiter:
    """Token buckets per tenant."""

    def __init__(self, client: redis.Redis, per_minute: int, burst: int = 0) -> None:
        self.per_minute = per_minute
        self.capacity = burst or per_minute
        self._take = client.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        """False when no limit is configured."""
        return self.per_minute > 0

    def take(self, tenant: str) -> None:
        """Spend one token of ``tenant``'s bucket, or raise ``RateLimited``."""
        if not self.enabled:
            return
        allowed, wait_ms = self._take(
            keys=[rate_bucket(tenant)], args=[self.capacity, self.per_minute / 60, time.time()]
        )
        if not int(allowed):
            raise RateLimited(
                f"Rate limit exceeded: {self.per_minute} requests per minute for this key.",
                int(wait_ms) / 1000,
            )
