"""The stream's non-blocking reads: replay, cursor check, gap fill (epoch-checked), and one
observer's position in a stream.

Every ``XRANGE`` and every non-blocking ``XREAD`` of a message's stream is here; the blocking
live tail is ``shared/streams/readers.py``. Reads after a cursor are exclusive of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import redis

from shared import events as ev
from shared.keys import message_keys
from shared.streams.contract import (
    READ_COUNT,
    START,
    Batch,
    InvalidCursor,
    StoredEvent,
    StreamCursor,
    StreamGone,
    is_same_message,
    parse_cursor,
    parse_id,
    stored_event,
)


class StreamReads:
    """The reads of message streams that never block, on one Redis client (no scripts, no writes)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def replay(self, message_id: str) -> list[StoredEvent]:
        """Every stored event of the message, oldest first (``[]`` when it has none)."""
        entries = self.redis.xrange(message_keys(message_id).events)
        return [stored_event(entry_id, data) for entry_id, data in entries]

    def check_cursor(self, message_id: str, raw: str) -> StreamCursor:
        """Validate a client's resume cursor: well-formed and naming a stored event (``0`` = start).

        A cursor at the terminal event is ``ended``: nothing follows it, so there is nothing
        to wait for."""
        cursor = parse_cursor(raw)
        if cursor == START:
            return StreamCursor(START)
        found = self.redis.xrange(message_keys(message_id).events, cursor, cursor, count=1)
        if not found:
            raise InvalidCursor(f"event id {cursor!r} is not part of this stream")
        entry_id, data = found[0]
        return StreamCursor(cursor, ended=ev.is_terminal(stored_event(entry_id, data).type))

    def read_after(
        self, message_id: str, after: str, *, epoch: str, count: int = READ_COUNT
    ) -> list[StoredEvent]:
        """Up to ``count`` events strictly after ``after``, without blocking (a gap fill).

        The same round trip checks that the message is still the one created with ``epoch``;
        ``StreamGone`` when it is not (deleted, expired or created anew)."""
        keys = message_keys(message_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xread({keys.events: after}, count=count)
        pipe.hmget(keys.status, "status", "epoch")
        reply, (status, found) = pipe.execute()
        if not is_same_message(status, found, epoch):
            raise StreamGone(message_id)
        if not reply:
            return []
        _, entries = reply[0]
        return [stored_event(entry_id, data) for entry_id, data in entries]

    def current_epoch(self, message_id: str) -> str | None:
        """The creation stamp of the message now (``""`` before stamps), None when it does not exist."""
        status, epoch = self.redis.hmget(message_keys(message_id).status, "status", "epoch")
        return None if status is None else (epoch or "")

    def is_current(self, message_id: str, epoch: str) -> bool:
        """True while the message exists and is the one created with ``epoch``."""
        status, found = self.redis.hmget(message_keys(message_id).status, "status", "epoch")
        return is_same_message(status, found, epoch)


class Cursor:
    """One observer's position: yields each event once, in order, healing gaps from Redis."""

    def __init__(self, reads: StreamReads, message_id: str, after: str, epoch: str) -> None:
        self.reads = reads
        self.message_id = message_id
        self.epoch = epoch
        self.last = after
        self._last_key = parse_id(after)
        #: The terminal event went out.
        self.ended = False
        #: The message was deleted (or its id re-created): nothing more may go out.
        self.gone = False

    @property
    def done(self) -> bool:
        """Nothing more will be yielded."""
        return self.ended or self.gone

    def _emit(self, items: Iterable[StoredEvent]) -> Iterator[StoredEvent]:
        for item in items:
            if self.done:
                return
            key = parse_id(item.id)
            if key <= self._last_key:
                continue
            self.last, self._last_key = item.id, key
            self.ended = ev.is_terminal(item.type)
            yield item

    def skip_to(self, last: str, ended: bool) -> None:
        """Events up to ``last`` went out another way (a pusher); go on after it."""
        key = parse_id(last)
        if key > self._last_key:
            self.last, self._last_key = last, key
            self.ended = ended

    def catch_up(self) -> Iterator[StoredEvent]:
        """Every stored event after the cursor, read from Redis without blocking; each read also
        checks that the message is still the one the observer started with."""
        while not self.done:
            try:
                batch = self.reads.read_after(self.message_id, self.last, epoch=self.epoch)
            except StreamGone:
                self.gone = True
                return
            yield from self._emit(batch)
            if len(batch) < READ_COUNT:
                return

    def take(self, batch: Batch) -> Iterator[StoredEvent]:
        """The events of ``batch`` not yet yielded; reads the gap first if there is one."""
        if parse_id(batch.prev) > self._last_key:
            yield from self.catch_up()
        yield from self._emit(batch.events)
