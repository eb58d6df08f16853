"""The fan-out hub: one blocking Redis tail per stream per API process, fanned out in memory.

Observers of a message do not each hold a blocked ``XREAD``. The first observer of a
stream starts a *tail* (a thread; a greenlet under gunicorn's gevent workers, which
patch ``threading``) that reads the stream with ``XREAD BLOCK`` on a connection of its
own and hands every batch to each observer's bounded mailbox. A tail stops when its
last observer leaves or right after the terminal event.

Each batch carries the id it was read after (``prev``). An observer that finds
``prev`` beyond the last event it yielded (it joined late, or its mailbox overflowed
because it reads slowly) catches up from Redis with ``XRANGE`` from its own last id:
it falls behind alone, and never skips an event.

An observer that is caught up can hand the tail a *pusher* (a non-blocking writer to its
connection, built by the HTTP layer): while its mailbox is empty, the tail writes each batch
to it directly, one shared encoding for all, instead of waking the observer's own thread
per batch (with a thousand observers that wake-up cost, not the writing, was the lag).
A pusher that cannot take a batch whole keeps the rest; the tail hands the observer back
to its mailbox, which flushes the rest first and goes on from the pusher's position.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import redis

from shared import events as ev
from shared.keys import message_keys
from shared.redis_client import redis_client
from shared.settings import Settings
from shared.store import MessageStore, StoredEvent, stored_event

#: How long one tail ``XREAD`` blocks; a tail whose observers all left lingers at most this long.
TAIL_BLOCK_MS = 2000
#: Entries per ``XREAD``/``XRANGE`` call.
READ_COUNT = 512
#: Pause before a tail retries after a Redis error.
RETRY_SECONDS = 0.5


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

    def close(self) -> None:
        """The tail feeding this mailbox stopped without the terminal event."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def get(self, timeout: float) -> Batch | bool | None:
        """The next batch; True when batches were dropped or the tail stopped; None on timeout.

        After True, the caller catches up from Redis (and joins a new tail if this one stopped).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._batches and not self._lagged and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._batches:
                batch = self._batches.popleft()
                self._size -= len(batch.events)
                return batch
            self._lagged = False
            return True

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


@dataclass
class _Tail:
    """The one reader of one stream in this process."""

    key: str
    last: str
    #: Observers fed through their mailboxes.
    mailboxes: set[Mailbox] = field(default_factory=set)
    #: Caught-up observers the tail writes to directly (not in ``mailboxes`` meanwhile).
    pushers: dict[Mailbox, Pusher] = field(default_factory=dict)
    thread: threading.Thread | None = None


class Hub:
    """Fans each stream out to its observers in this process; one tail per stream."""

    def __init__(
        self,
        store: MessageStore,
        tail_client: redis.Redis,
        *,
        mailbox_events: int = 1024,
        block_ms: int = TAIL_BLOCK_MS,
    ) -> None:
        self.store = store
        self.tail_client = tail_client
        self.mailbox_events = mailbox_events
        self.block_ms = block_ms
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    # -- tails ------------------------------------------------------------

    def _join(self, message_id: str, after: str) -> Mailbox:
        mailbox = Mailbox(self.mailbox_events)
        with self._lock:
            tail = self._tails.get(message_id)
            if tail is None:
                tail = _Tail(message_keys(message_id).events, after)
                tail.thread = threading.Thread(
                    target=self._run_tail,
                    args=(message_id, tail),
                    name=f"sluice-tail-{message_id}",
                    daemon=True,
                )
                self._tails[message_id] = tail
                tail.mailboxes.add(mailbox)
                tail.thread.start()
            else:
                tail.mailboxes.add(mailbox)
                if parse_id(tail.last) > parse_id(after):
                    mailbox.mark_lagged()  # the tail already handed out entries this observer has not seen
        return mailbox

    def _leave(self, message_id: str, mailbox: Mailbox) -> None:
        with self._lock:
            tail = self._tails.get(message_id)
            if tail is not None:
                tail.mailboxes.discard(mailbox)
                tail.pushers.pop(mailbox, None)

    def _start_pushing(self, message_id: str, mailbox: Mailbox, pusher: Pusher, last: str) -> bool:
        """Let the tail write to ``pusher`` directly if the observer is level with it."""
        with self._lock:
            tail = self._tails.get(message_id)
            if tail is None or mailbox not in tail.mailboxes or tail.last != last or len(mailbox):
                return False
            if mailbox.flagged:  # lagged or closed: its reader has work first
                return False
            tail.mailboxes.discard(mailbox)
            tail.pushers[mailbox] = pusher
            return True

    def _stop_pushing(self, message_id: str, mailbox: Mailbox) -> None:
        """Back to the mailbox (unless the tail already handed the observer back)."""
        with self._lock:
            tail = self._tails.get(message_id)
            if tail is not None and tail.pushers.pop(mailbox, None) is not None:
                tail.mailboxes.add(mailbox)

    def _run_tail(self, message_id: str, tail: _Tail) -> None:
        """Read the stream until no observer is left or the terminal event was read."""
        try:
            self._tail_loop(message_id, tail)
        except BaseException:  # a bug or a kill: observers must not wait for a dead tail
            with self._lock:
                if self._tails.get(message_id) is tail:
                    del self._tails[message_id]
                orphans = [*tail.mailboxes, *tail.pushers]
            for mailbox in orphans:
                mailbox.close()
            raise

    def _tail_loop(self, message_id: str, tail: _Tail) -> None:
        while True:
            with self._lock:
                if not tail.mailboxes and not tail.pushers:
                    del self._tails[message_id]
                    self._release_idle()
                    return
            try:
                reply = self.tail_client.xread({tail.key: tail.last}, count=READ_COUNT, block=self.block_ms)
            except redis.RedisError:
                time.sleep(RETRY_SECONDS)  # observers keep pinging; their own reads report a lasting outage
                continue
            if not reply:
                continue
            entries = reply[0][1]
            batch = Batch(tail.last, tuple(stored_event(i, d) for i, d in entries))
            ended = any(ev.is_terminal(item.type) for item in batch.events)
            with self._lock:
                tail.last = batch.events[-1].id
                receivers = list(tail.mailboxes)
                self._push(tail, batch, ended)
                if ended:
                    del self._tails[message_id]
                    self._release_idle()
            for mailbox in receivers:
                mailbox.put(batch)
            if ended:
                return

    @staticmethod
    def _push(tail: _Tail, batch: Batch, ended: bool) -> None:
        """Write ``batch`` to every pusher (holding the lock); wake the ones that must stop."""
        if not tail.pushers:
            return
        stopped = [mailbox for mailbox, pusher in tail.pushers.items() if not pusher.push(batch)]
        if ended:
            stopped = list(tail.pushers)
        for mailbox in stopped:
            del tail.pushers[mailbox]
            tail.mailboxes.add(mailbox)
            mailbox.mark_lagged()

    def _release_idle(self) -> None:
        """With no tail left, close the idle tail connections (called holding the lock)."""
        if not self._tails:
            self.tail_client.connection_pool.disconnect(inuse_connections=False)

    def tail_count(self) -> int:
        """How many streams this process tails now."""
        with self._lock:
            return len(self._tails)

    # -- observers --------------------------------------------------------

    def follow(self, message_id: str, after: str, *, idle_seconds: float) -> Iterator[StoredEvent | None]:
        """Stored events after ``after``, then live ones, ending after the terminal event.

        Yields ``None`` each time ``idle_seconds`` pass with nothing new (time for a ping);
        ends early if the message is deleted or expires meanwhile.
        """
        for chunk in self.follow_chunks(message_id, after, idle_seconds=idle_seconds):
            if chunk is None:
                yield None
            else:
                yield from chunk

    def follow_chunks(
        self, message_id: str, after: str, *, idle_seconds: float, pusher: Pusher | None = None
    ) -> Iterator[list[StoredEvent] | None]:
        """Like ``follow``, but each chunk holds every event ready at once, to write in one send.

        An observer that keeps up gets one event per chunk; one that fell behind gets what
        piled up in one piece, which is how it catches up without a send per event.

        With a ``pusher``, the tail writes live events to it directly while the observer keeps
        up; those are not yielded. An empty chunk then means: pushing stopped, write what the
        pusher still holds.
        """
        cursor = _Cursor(self.store, message_id, after)
        page: list[StoredEvent] = []
        for item in cursor.catch_up():
            page.append(item)
            if len(page) == READ_COUNT:
                yield page
                page = []
        if page:
            yield page
        if cursor.ended:
            return
        mailbox = self._join(message_id, cursor.last)
        try:
            while not cursor.ended:
                pushing = pusher is not None and self._start_pushing(message_id, mailbox, pusher, cursor.last)
                if pushing:
                    assert pusher is not None
                    pushed_before = pusher.last
                    got = mailbox.get(idle_seconds)
                    self._stop_pushing(message_id, mailbox)
                    if pusher.last is not None and pusher.last != pushed_before:
                        cursor.skip_to(pusher.last, pusher.ended)
                        if got is None:  # events went out meanwhile: not idle, no ping
                            yield []  # but the pusher may hold the rest of one
                            continue
                else:
                    got = mailbox.get(idle_seconds)
                if got is None:
                    if self.store.get_field(message_id, "status") is None:
                        return
                    yield None
                    continue
                chunk: list[StoredEvent] = []
                while got is not None and not cursor.ended:
                    if got is True:
                        chunk.extend(cursor.catch_up())
                        if mailbox.closed and not cursor.ended:
                            self._leave(message_id, mailbox)
                            mailbox = self._join(message_id, cursor.last)
                    elif isinstance(got, Batch):
                        chunk.extend(cursor.take(got))
                    got = mailbox.get(0) if len(chunk) < READ_COUNT else None
                if chunk or pushing:
                    yield chunk
        finally:
            self._leave(message_id, mailbox)


class _Cursor:
    """One observer's position: yields each event once, in order, healing gaps from Redis."""

    def __init__(self, store: MessageStore, message_id: str, after: str) -> None:
        self.store = store
        self.message_id = message_id
        self.last = after
        self._last_key = parse_id(after)
        self.ended = False

    def _emit(self, items: Iterable[StoredEvent]) -> Iterator[StoredEvent]:
        for item in items:
            if self.ended:
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
        """Every stored event after the cursor, read from Redis without blocking."""
        while not self.ended:
            batch = self.store.read_events(self.message_id, self.last, count=READ_COUNT)
            yield from self._emit(batch)
            if len(batch) < READ_COUNT:
                return

    def take(self, batch: Batch) -> Iterator[StoredEvent]:
        """The events of ``batch`` not yet yielded; reads the gap first if there is one."""
        if parse_id(batch.prev) > self._last_key:
            yield from self.catch_up()
        yield from self._emit(batch.events)


def hub_client(url: str, name: str) -> redis.Redis:
    """A client for tails: one connection per tailed stream, never cut short while blocked."""
    return redis_client(Settings(redis_url=url), name)
