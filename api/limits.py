"""Per-key rate limits: the 429 a caller gets when its tenant's token bucket is empty.

A key may start ``SLUICE_RATE_LIMIT_PER_MINUTE`` messages a minute, in bursts of up to
``SLUICE_RATE_LIMIT_BURST`` (default: the per-minute figure). Over it: 429
``rate_limit_error`` with ``Retry-After``. The bucket lives in Redis and is taken inside the
store's create script, in the same round trip as concurrency, queue depth and the create.
"""

from __future__ import annotations

import math

from api.errors import ApiError


class RateLimited(ApiError):
    """429 rate_limit_error with ``Retry-After`` (whole seconds, at least 1)."""

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(429, message, headers={"Retry-After": str(seconds)})
