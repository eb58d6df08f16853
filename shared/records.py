"""What the message store hands out: its results (claims, admissions).

The stream's own records (stored events, cursors, the tombstone) are defined by the stream
contract, ``shared/streams/contract.py``, and re-exported here for the store's write side."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
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


class ClaimOutcome(StrEnum):
    """What a claim found; the first three hold the message's lock for the claiming run."""

    #: It was pending: the run starts it.
    START = "start"
    #: It was processing and its lock had lapsed (the worker is gone): the run resumes it.
    RESUME = "resume"
    #: As ``RESUME``, but over the resume limit: the run ends it.
    EXHAUSTED = "exhausted"
    #: A live worker holds it.
    LOCKED = "locked"
    #: Already ended (the terminal status).
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"
    #: It does not exist (deleted or expired).
    GONE = "gone"
    #: Redis Cluster mode only: admitted (its task queued) but its message not written yet, its
    #: create being between its two halves; ``ClusterMessageStore.claim`` tries again, then
    #: drops the reservation and answers ``GONE``.
    NOT_YET = "not_yet"


#: The claim outcomes that hand the message to the claiming run.
RUNS = frozenset({ClaimOutcome.START, ClaimOutcome.RESUME, ClaimOutcome.EXHAUSTED})


@dataclass(frozen=True)
class Claim:
    """What ``claim`` did, and for a run (``start``, ``resume``, ``exhausted``) what the worker
    needs next, read in the same round trip: the status hash after the claim and the request."""

    outcome: ClaimOutcome
    status: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] | None = None

    @property
    def runs(self) -> bool:
        """True when the claiming run holds the message now."""
        return self.outcome in RUNS


class AdmissionOutcome(StrEnum):
    """What a create did."""

    CREATED = "created"
    #: A repeat of an Idempotency-Key call with the same body: the first call's message.
    IDEMPOTENT = "idempotent"
    #: The same Idempotency-Key with another body.
    CONFLICT = "conflict"
    #: The message id is taken.
    EXISTS = "exists"
    #: The pending queue is full.
    OVERLOADED = "overloaded"
    #: The tenant has too many messages pending or running.
    BUSY = "busy"
    #: The tenant's stored bytes are over its quota.
    QUOTA = "quota"
    #: The tenant's rate is spent (``retry_after``: seconds until its next token).
    LIMITED = "limited"


@dataclass(frozen=True)
class Admission:
    """What ``create`` did (see ``AdmissionOutcome``); for ``idempotent`` ``message_id`` is the
    first call's."""

    outcome: AdmissionOutcome
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
