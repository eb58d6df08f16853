"""What flows from a stream's tail to one observer: batches, a bounded mailbox, a pusher.

Each batch carries the id it was read after (``prev``), so an observer that finds ``prev``
beyond the last event it yielded (it joined late, or its mailbox overflowed because it reads
slowly) knows to catch up from Redis: it falls behind alone and never skips an event.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from shared import events as ev
from shared.records import StoredEvent


class Wake(Enum):
    """Why ``Mailbox.get`` returned without a batch."""

    #: The wait timed out with nothing new.
    IDLE = "idle"
    #: Batches were dropped (a slow reader) or the tail stopped early: catch up from Redis.
    CATCH_UP = "catch_up"
    #: The message was deleted (or its id now names a new message): end the observer.
    GONE = "gone"


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream id as ``(ms, seq)`` so ids compare in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Batch:
    """Consecutive stream entries: every entry after ``prev`` up to the last one here."""

    prev: str
    events: tuple[StoredEvent, ...]
    #: Encodings of ``events`` by pusher framing, built once for every pusher of the batch.
    payloads: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ended(self) -> bool:
        """True when the batch ends with the terminal event."""
        return ev.is_terminal(self.events[-1].type)


class Pusher(Protocol):
    """Writes batches straight to one observer's connection for the tail, never blocking.

    ``last`` is the id of the last event it wrote (whole or in part), ``ended`` whether that
    was the terminal event; the observer goes on from there when pushing stops.
    """

    last: str | None
    ended: bool

    def push(self, batch: Batch) -> bool:
        """Write ``batch``; False when it did not go out whole (the pusher keeps the rest) or failed."""
        ...


class Mailbox:
    """A bounded queue of batches for one observer; overflow sets ``lagged`` instead of blocking."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._batches: deque[Batch] = deque()
        self._size = 0
        self._lagged = False
        self._closed = False
        self._gone = False
        self._cond = threading.Condition()

    def put(self, batch: Batch) -> bool:
        """Queue ``batch``; False (and the observer will catch up from Redis) when full."""
        with self._cond:
            if self._size + len(batch.events) > self.max_events and self._batches:
                self._lagged = True
                self._cond.notify()
                return False
            self._batches.append(batch)
            self._size += len(batch.events)
            self._cond.notify()
            return True

    def mark_lagged(self) -> None:
        """Tell the reader to catch up from Redis before waiting for the next batch."""
        with self._cond:
            self._lagged = True
            self._cond.notify()

    def close(self, *, gone: bool = False) -> None:
        """The tail feeding this mailbox stopped without the terminal event; ``gone``: because
        the message was deleted."""
        with self._cond:
            self._closed = True
            self._gone = self._gone or gone
            self._cond.notify()

    def get(self, timeout: float) -> Batch | Wake:
        """The next batch, or why there is none: ``IDLE`` after ``timeout``, ``CATCH_UP`` when
        batches were dropped or the tail stopped (catch up from Redis, and join a new tail if this
        one stopped), ``GONE`` once the message was deleted (queued batches come first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._batches and not self._lagged and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Wake.IDLE
                self._cond.wait(remaining)
            if self._batches:
                batch = self._batches.popleft()
                self._size -= len(batch.events)
                return batch
            if self._gone:
                return Wake.GONE
            self._lagged = False
            return Wake.CATCH_UP

    @property
    def flagged(self) -> bool:
        """True when the reader must catch up (or rejoin) before anything else."""
        return self._lagged or self._closed

    @property
    def closed(self) -> bool:
        """True once the tail feeding this mailbox has stopped early."""
        return self._closed

    def __len__(self) -> int:
        return self._size
