"""What the message store hands out: its results (claims, admissions), cursors and stored events."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import events as ev

#: A resume cursor: ``0`` (from the start) or a stream entry id ``<ms>-<seq>``.
CURSOR = re.compile(r"^(0|\d{1,20}-\d{1,20})$")

#: The entry a deleted message's stream is replaced by (never sent to an observer).
TOMBSTONE = '{"type":"sluice_deleted"}'
#: How long a tombstone stays: enough for every tail to wake, short enough to be no storage.
TOMBSTONE_TTL_MS = 10_000


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
