"""The resumable stream's contract: key layout, entry encoding, tombstone, cursor rules, signals.

Everything a reader or a writer of a message's stream must agree on, and nothing that does I/O:

- **Keys** (defined in ``shared/keys.py``): a message's events are the stream
  ``message_keys(id).events``; its status hash ``message_keys(id).status`` holds the creation
  stamp (``epoch``) every read checks; an API process's tail readers also read wake streams
  ``hub_wake(token)``.
- **Entries**: one field, ``d`` (``ENTRY_FIELD``), the event's compact JSON with ``type`` as its
  first key (``shared.events.encode``), so the type is read from a fixed prefix.
- **Tombstone**: a delete replaces the stream with one ``TOMBSTONE`` entry that lives
  ``TOMBSTONE_TTL_MS``; its ``XADD`` wakes every blocked reader, which then finds the status gone.
- **Cursors**: ``0`` / ``0-0`` (from the start) or an entry id ``<ms>-<seq>``; reads are exclusive
  of the cursor. A cursor is bound to one creation of the id (its ``epoch``): a deleted, expired
  or re-created message is ``StreamGone`` to whoever followed it.
- **Signals**: what the runtime yields besides events (``Tick``) and why a tail's mailbox woke its
  observer without a batch (``Wake``).

Errors: ``InvalidCursor`` (a client's cursor: a 400) and ``StreamGone`` (the followed message is
no longer there: an unstored ``not_found_error`` to the observer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from shared import events as ev

#: The one field of a stream entry: the event's JSON.
ENTRY_FIELD = "d"
#: The cursor before the first entry.
START = "0-0"
#: A resume cursor: ``0`` (from the start) or a stream entry id ``<ms>-<seq>``.
CURSOR = re.compile(r"^(0|\d{1,20}-\d{1,20})$")
#: Entries per read (replay page, gap fill, live ``XREAD``).
READ_COUNT = 512

#: The entry a deleted message's stream is replaced by (never sent to an observer).
TOMBSTONE = '{"type":"sluice_deleted"}'
#: How long a tombstone stays: enough for every tail to wake, short enough to be no storage.
TOMBSTONE_TTL_MS = 10_000


class InvalidCursor(ValueError):
    """A stream cursor that is malformed or names no stored event."""


class StreamGone(LookupError):
    """The message a reader follows was deleted or expired (or its id now names a new message)."""


@dataclass(frozen=True)
class StoredEvent:
    """One event as stored: its stream position, its type and its JSON data."""

    id: str
    type: str
    data: str


def stored_event(entry_id: str, fields: Mapping[str, str]) -> StoredEvent:
    """A stream entry as a ``StoredEvent``: one field ``d``, the event's JSON, whose type is read
    from its fixed prefix (storing the type again would cost ~20 bytes an entry)."""
    data = fields[ENTRY_FIELD]
    return StoredEvent(entry_id, ev.type_of(data), data)


@dataclass(frozen=True)
class StreamCursor:
    """Where an observer starts: after ``after``; ``ended`` when that is the terminal event."""

    after: str
    ended: bool = False


def parse_cursor(raw: str) -> str:
    """A client's cursor (``Last-Event-ID`` or ``?after=``) as an entry id; ``InvalidCursor`` when
    malformed. Whether it names a stored event is the runtime's check (``check_cursor``)."""
    cursor = raw.strip()
    if not CURSOR.match(cursor):
        raise InvalidCursor(f"malformed event id {cursor!r}; expected <ms>-<seq>")
    return START if cursor in ("0", START) else cursor


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream id as ``(ms, seq)`` so ids compare in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def epoch_of(status: Mapping[str, str]) -> str:
    """The creation stamp of a message's status hash (``""`` for messages stored before stamps).

    A message id can be deleted and created again; readers bind to the stamp, not the id, so
    what they follow is always the message they started with."""
    return status.get("epoch", "")


def is_same_message(status: str | None, epoch: str | None, bound: str) -> bool:
    """True when a status hash's ``status`` and ``epoch`` fields (as read by ``HMGET``) still
    name the message created with stamp ``bound``."""
    return status is not None and (epoch or "") == bound


# -- signals ----------------------------------------------------------------------------------


class Tick(Enum):
    """What the runtime's ``follow_chunks`` yields besides a chunk of events."""

    #: ``idle_seconds`` passed with nothing new: time for a ping.
    PING = "ping"
    #: The tail stopped pushing to the observer's socket: write what the pusher still holds.
    FLUSH = "flush"
    #: The message was deleted while observed: end with a ``not_found_error`` (unstored).
    GONE = "gone"


class Wake(Enum):
    """Why a tail's mailbox woke its observer without a batch (``Mailbox.get``)."""

    #: The wait timed out with nothing new.
    IDLE = "idle"
    #: Batches were dropped (a slow reader) or the tail stopped early: catch up from Redis.
    CATCH_UP = "catch_up"
    #: The message was deleted (or its id now names a new message): end the observer.
    GONE = "gone"


#: Every event ready at once, to write in one send.
Chunk = list[StoredEvent]


@dataclass(frozen=True)
class Batch:
    """Consecutive stream entries from a tail: every entry after ``prev`` up to the last one here.

    ``prev`` lets an observer that finds it beyond its own last event (it joined late, or its
    mailbox overflowed) know to catch up from Redis: it falls behind alone, never skips."""

    prev: str
    events: tuple[StoredEvent, ...]
    #: Encodings of ``events`` by pusher framing, built once for every pusher of the batch.
    payloads: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ended(self) -> bool:
        """True when the batch ends with the terminal event."""
        return ev.is_terminal(self.events[-1].type)


class Pusher(Protocol):
    """Writes batches straight to one observer's connection for the tail, never blocking
    (the HTTP layer implements it: ``api.sse.SocketPusher``).

    ``last`` is the id of the last event it wrote (whole or in part), ``ended`` whether that
    was the terminal event; the observer goes on from there when pushing stops.
    """

    last: str | None
    ended: bool

    def push(self, batch: Batch) -> bool:
        """Write ``batch``; False when it did not go out whole (the pusher keeps the rest) or failed."""
        ...
