"""What the message store hands out: its results (claims, admissions), cursors and stored events."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared import events as ev

#: A resume cursor: ``0`` (from the start) or a stream entry id ``<ms>-<seq>``.
CURSOR = re.compile(r"^(0|\d{1,20}-\d{1,20})$")

#: The entry a deleted message's stream is replaced by (never sent to an observer).
TOMBSTONE = '{"type":"sluice_deleted"}'
#: How long a tombstone stays: enough for every tail to wake, short enough to be no storage.
TOMBSTONE_TTL_MS = 10_000


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


class InvalidCursor(ValueError):
    """A stream cursor that is malformed or names no stored event."""


class StreamGone(LookupError):
    """The message a reader follows was deleted or expired (or its id now names a new message)."""


@dataclass(frozen=True)
class StreamCursor:
    """Where an observer starts: after ``after``; ``ended`` when that is the terminal event."""

    after: str
    ended: bool = False


def epoch_of(status: Mapping[str, str]) -> str:
    """The creation stamp of a message's status hash (``""`` for messages stored before stamps).

    A message id can be deleted and created again; readers bind to the stamp, not the id, so
    what they follow is always the message they started with."""
    return status.get("epoch", "")


@dataclass(frozen=True)
class StoredEvent:
    """One event as stored: its stream position, its type and its JSON data."""

    id: str
    type: str
    data: str


def now_iso() -> str:
    """The current time as ISO-8601 UTC with ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored_event(entry_id: str, fields: dict[str, str]) -> StoredEvent:
    """A stream entry as a ``StoredEvent``: one field ``d``, the event's JSON, whose type is read
    from its fixed prefix (storing the type again would cost ~20 bytes an entry)."""
    data = fields["d"]
    return StoredEvent(entry_id, ev.type_of(data), data)
