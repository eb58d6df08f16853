"""A bounded mailbox per observer: the batches of its stream's tail, or why it woke without one.

Overflow never blocks the tail: it drops the batch and marks the mailbox ``lagged``, and the
observer catches up from Redis (``Batch.prev`` tells it where its gap starts).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from shared.streams.contract import Batch, Wake


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
