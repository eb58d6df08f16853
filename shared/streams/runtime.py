"""The stream runtime: the one owner of every read of a message's stream.

``StreamRuntime`` is built once per API process (``api.services.build_services``); workers and
the batch results use its read side, ``StreamReads``, for a replay. It offers:

- **replay**: every stored event (``replay``), a client's cursor checked (``check_cursor``);
- **follow**: stored events after a cursor, then live ones, ending after the terminal event:
  observers of a stream in this process share one tail (``shared/streams/readers.py``) and get
  its batches through a bounded mailbox (``shared/streams/mailbox.py``), catching up from Redis
  alone when they fall behind (``reads.Cursor``, the gap fill): an observer never skips an event;
- **deletion**: a delete's tombstone wakes the tail, which ends the stream's observers; an
  expired message is noticed at the next idle tick; either way they get ``Tick.GONE``.

An observer that is caught up can hand the tail a *pusher* (a non-blocking writer to its
connection, built by the HTTP layer): while its mailbox is empty, the reader writes each
batch to it directly, one shared encoding for all, instead of waking the observer's own
thread per batch (with a thousand observers that wake-up cost, not the writing, was the
lag). A pusher that cannot take a batch whole keeps the rest; the reader hands the observer
back to its mailbox, which flushes the rest first and goes on from the pusher's position.

The API only frames what ``follow_chunks`` yields (``api/sse.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from shared.streams.contract import READ_COUNT, Chunk, Pusher, StoredEvent, Tick, Wake
from shared.streams.readers import TailReaders
from shared.streams.reads import Cursor, StreamReads
from shared.streams.tails import TAIL_BLOCK_MS


class StreamRuntime(StreamReads):
    """Replay, gap fill and live tail of message streams for one process, over a bounded set of
    tail connections."""

    def __init__(
        self,
        client: redis.Redis,
        tail_client: redis.Redis,
        *,
        mailbox_events: int = 1024,
        block_ms: int = TAIL_BLOCK_MS,
        max_readers: int = 8,
    ) -> None:
        super().__init__(client)
        self.tails = TailReaders(
            client, tail_client, mailbox_events=mailbox_events, block_ms=block_ms, max_readers=max_readers
        )

    def tail_count(self) -> int:
        """How many streams this process tails now."""
        return self.tails.tail_count()

    def reader_count(self) -> int:
        """How many readers (tail connections) this process runs now."""
        return self.tails.reader_count()

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
    ) -> Iterator[Chunk | Tick]:
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
            epoch = self.current_epoch(message_id)
            if epoch is None:
                yield Tick.GONE
                return
        cursor = Cursor(self, message_id, after, epoch)
        page: Chunk = []
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
        mailbox = self.tails.join(stream, cursor.last)
        try:
            while not cursor.done:
                pushing = pusher is not None and self.tails.start_pushing(
                    stream, mailbox, pusher, cursor.last
                )
                if pushing:
                    assert pusher is not None
                    pushed_before = pusher.last
                    got = mailbox.get(idle_seconds)
                    self.tails.stop_pushing(stream, mailbox)
                    if pusher.last is not None and pusher.last != pushed_before:
                        cursor.skip_to(pusher.last, pusher.ended)
                        if got is Wake.IDLE:  # events went out meanwhile: not idle, no ping
                            yield Tick.FLUSH  # but the pusher may hold the rest of one
                            continue
                else:
                    got = mailbox.get(idle_seconds)
                if got is Wake.IDLE:
                    if not self.is_current(message_id, epoch):  # expired: no tombstone wakes us
                        yield Tick.GONE
                        return
                    yield Tick.PING
                    continue
                chunk: Chunk = []
                while got is not Wake.IDLE and not cursor.done:
                    if got is Wake.GONE:
                        cursor.gone = True
                    elif got is Wake.CATCH_UP:
                        chunk.extend(cursor.catch_up())
                        if mailbox.closed and not cursor.done:
                            self.tails.leave(stream, mailbox)
                            mailbox = self.tails.join(stream, cursor.last)
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
            self.tails.leave(stream, mailbox)
