"""One observer's position in a stream: each event once, in order, gaps healed from Redis."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from api.mailbox import Batch, parse_id
from shared import events as ev
from shared.records import StoredEvent, StreamGone
from shared.store import MessageStore

#: Entries per ``XRANGE`` call.
READ_COUNT = 512


class Cursor:
    """One observer's position: yields each event once, in order, healing gaps from Redis."""

    def __init__(self, store: MessageStore, message_id: str, after: str, epoch: str) -> None:
        self.store = store
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
                batch = self.store.read_events(self.message_id, self.last, count=READ_COUNT, epoch=self.epoch)
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
