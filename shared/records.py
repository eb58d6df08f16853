"""What the message store hands out: its results (claims, admissions).

The stream's own records (stored events, cursors, the tombstone) are defined by the stream
contract, ``shared/streams/contract.py``, and re-exported here for the store's write side."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.streams.contract import (
    TOMBSTONE,
    TOMBSTONE_TTL_MS,
    InvalidCursor,
    StoredEvent,
    StreamCursor,
    StreamGone,
    epoch_of,
    stored_event,
)

__all__ = [
    "TOMBSTONE",
    "TOMBSTONE_TTL_MS",
    "Admission",
    "Claim",
    "InvalidCursor",
    "Limits",
    "StoredEvent",
    "StreamCursor",
    "StreamGone",
    "epoch_of",
    "now_iso",
    "stored_event",
]


@dataclass(frozen=True)
class Claim:
    """What ``claim`` did, and for a run (``start``, ``resume``, ``exhausted``) what the worker
    needs next, read in the same round trip: the status hash after the claim and the request."""

    outcome: str
    status: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] | None = None

    @property
    def runs(self) -> bool:
        return self.outcome in ("start", "resume", "exhausted")


@dataclass(frozen=True)
class Admission:
    """What ``create`` did: ``created``, ``idempotent`` (``message_id`` is the first call's),
    ``conflict`` (same Idempotency-Key, other body), ``exists``, ``overloaded``, ``busy``,
    ``quota`` (the tenant's stored bytes) or ``limited`` (the tenant's rate; ``retry_after`` is
    the seconds until its next token)."""

    outcome: str
    message_id: str
    retry_after: float = 0.0
    #: The creation stamp of a message this call created (``""`` otherwise).
    epoch: str = ""


@dataclass(frozen=True)
class Limits:
    """Admission limits checked atomically with the create (0 = off).

    The rate is a token bucket per tenant: ``rate_per_minute`` messages a minute, in bursts
    of up to ``rate_burst`` (0: the per-minute figure).
    """

    max_queue_depth: int = 0
    max_concurrent: int = 0
    rate_per_minute: int = 0
    rate_burst: int = 0
    #: Request bytes a tenant's messages may keep stored at once.
    max_stored_bytes: int = 0


def now_iso() -> str:
    """The current time as ISO-8601 UTC with ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
