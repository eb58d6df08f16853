"""The fan-out hub: observers of a stream in this process share one reader (``api/readers.py``).

Observers of a message do not each hold a blocked ``XREAD``: they join the stream's tail and
get its batches through a bounded mailbox (``api/mailbox.py``), catching up from Redis alone
when they fall behind (``api/cursor.py``): an observer never skips an event.

An observer that is caught up can hand the tail a *pusher* (a non-blocking writer to its
connection, built by the HTTP layer): while its mailbox is empty, the reader writes each
batch to it directly, one shared encoding for all, instead of waking the observer's own
thread per batch (with a thousand observers that wake-up cost, not the writing, was the
lag). A pusher that cannot take a batch whole keeps the rest; the reader hands the observer
back to its mailbox, which flushes the rest first and goes on from the pusher's position.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from api.cursor import READ_COUNT, Cursor
from api.mailbox import Batch, Mailbox, Pusher, Wake, parse_id
from api.readers import TailReaders, hub_client, tail_client
from shared.records import StoredEvent, epoch_of

__all__ = ["Batch", "Hub", "Mailbox", "Pusher", "Tick", "Wake", "hub_client", "parse_id", "tail_client"]


class Tick(Enum):
    """What ``follow_chunks`` yields besides a chunk of events."""

    #: ``idle_seconds`` passed with nothing new: time for a ping.
    PING = "ping"
    #: The tail stopped pushing to the observer's socket: write what the pusher still holds.
    FLUSH = "flush"
    #: The message was deleted while observed: end with a ``not_found_error`` (unstored).
    GONE = "gone"


class Hub(TailReaders):
    """Fans each stream out to its observers in this process, over a bounded set of readers."""

    # -- observers --------------------------------------------------------

    def follow(
        self, message_id: str, after: str, *, idle_seconds: float, epoch: str | None = None
    ) -> Iterator[StoredEvent | Tick]:
        """Stored events after ``after``, then live ones, ending after the terminal event.

        Yields ``Tick.PING`` each time ``idle_seconds`` pass with nothing new, and
        ``Tick.GONE`` (then ends) if the message is deleted or expires meanwhile.
        """
        for chunk in self.follow_chunks(message_id, after, idle_seconds=idle_seconds, epoch=epoch):
            if isinstance(chunk, Tick):
                yield chunk
            else:
                yield from chunk

    def follow_chunks(
        self,
        message_id: str,
        after: str,
        *,
        idle_seconds: float,
        pusher: Pusher | None = None,
        epoch: str | None = None,
    ) -> Iterator[list[StoredEvent] | Tick]:
        """Like ``follow``, but each chunk holds every event ready at once, to write in one send.

        An observer that keeps up gets one event per chunk; one that fell behind gets what
        piled up in one piece, which is how it catches up without a send per event.

        ``epoch`` binds the observer to one creation of ``message_id`` (read from its status
        when not given): if the id is deleted, expires or is created anew, the observer gets
        ``Tick.GONE`` and ends; it never sees another message's events.

        With a ``pusher``, the tail writes live events to it directly while the observer keeps
        up; those are not yielded. ``Tick.FLUSH`` then means: pushing stopped, write what the
        pusher still holds.
        """
        if epoch is None:
            status = self.store.get_status(message_id)
            if status is None:
                yield Tick.GONE
                return
            epoch = epoch_of(status)
        cursor = Cursor(self.store, message_id, after, epoch)
        page: list[StoredEvent] = []
        for item in cursor.catch_up():
            page.append(item)
            if len(page) == READ_COUNT:
                yield page
                page = []
        if page:
            yield page
        if cursor.gone:
            yield Tick.GONE
        if cursor.done:
            return
        stream = (message_id, epoch)
        mailbox = self._join(stream, cursor.last)
        try:
            while not cursor.done:
                pushing = pusher is not None and self._start_pushing(stream, mailbox, pusher, cursor.last)
                if pushing:
                    assert pusher is not None
                    pushed_before = pusher.last
                    got = mailbox.get(idle_seconds)
                    self._stop_pushing(stream, mailbox)
                    if pusher.last is not None and pusher.last != pushed_before:
                        cursor.skip_to(pusher.last, pusher.ended)
                        if got is Wake.IDLE:  # events went out meanwhile: not idle, no ping
                            yield Tick.FLUSH  # but the pusher may hold the rest of one
                            continue
                else:
                    got = mailbox.get(idle_seconds)
                if got is Wake.IDLE:
                    if not self.store.is_current(message_id, epoch):  # expired: no tombstone wakes us
                        yield Tick.GONE
                        return
                    yield Tick.PING
                    continue
                chunk: list[StoredEvent] = []
                while got is not Wake.IDLE and not cursor.done:
                    if got is Wake.GONE:
                        cursor.gone = True
                    elif got is Wake.CATCH_UP:
                        chunk.extend(cursor.catch_up())
                        if mailbox.closed and not cursor.done:
                            self._leave(stream, mailbox)
                            mailbox = self._join(stream, cursor.last)
                    else:
                        chunk.extend(cursor.take(got))
                    got = mailbox.get(0) if len(chunk) < READ_COUNT else Wake.IDLE
                if chunk:
                    yield chunk
                elif pushing:
                    yield Tick.FLUSH
                if cursor.gone:
                    yield Tick.GONE
        finally:
            self._leave(stream, mailbox)
