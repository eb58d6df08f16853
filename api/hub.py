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
from enum import Enum
from typing import Protocol

import redis

from shared import events as ev
from shared.keys import message_keys
from shared.store import MessageStore, StoredEvent, StreamGone, epoch_of, stored_event

#: How long one tail ``XREAD`` blocks; a tail whose observers all left lingers at most this long.
TAIL_BLOCK_MS = 2000
#: Entries per ``XREAD``/``XRANGE`` call.
READ_COUNT = 512
#: Pause before a tail retries after a Redis error.
RETRY_SECONDS = 0.5


class Wake(Enum):
    """Why ``Mailbox.get`` returned without a batch."""

    #: The wait timed out with nothing new.
    IDLE = "idle"
    #: Batches were dropped (a slow reader) or the tail stopped early: catch up from Redis.
    CATCH_UP = "catch_up"
    #: The message was deleted (or its id now names a new message): end the observer.
    GONE = "gone"


class Tick(Enum):
    """What ``follow_chunks`` yields besides a chunk of events."""

    #: ``idle_seconds`` passed with nothing new: time for a ping.
    PING = "ping"
    #: The tail stopped pushing to the observer's socket: write what the pusher still holds.
    FLUSH = "flush"
    #: The message was deleted while observed: end with a ``not_found_error`` (unstored).
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


@dataclass
class _Tail:
    """The one reader of one stream in this process."""

    key: str
    #: The status hash, read with every batch to see that the message is still the same one.
    status_key: str
    #: The creation stamp of the message this tail reads (``epoch_of``).
    epoch: str
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
        #: Tails by (message id, epoch): a deleted and re-created id never shares a tail.
        self._tails: dict[tuple[str, str], _Tail] = {}
        self._lock = threading.Lock()

    # -- tails ------------------------------------------------------------

    def _join(self, stream: tuple[str, str], after: str) -> Mailbox:
        mailbox = Mailbox(self.mailbox_events)
        with self._lock:
            tail = self._tails.get(stream)
            if tail is None:
                keys = message_keys(stream[0])
                tail = _Tail(keys.events, keys.status, stream[1], after)
                tail.thread = threading.Thread(
                    target=self._run_tail,
                    args=(stream, tail),
                    name=f"sluice-tail-{stream[0]}",
                    daemon=True,
                )
                self._tails[stream] = tail
                tail.mailboxes.add(mailbox)
                tail.thread.start()
            else:
                tail.mailboxes.add(mailbox)
                if parse_id(tail.last) > parse_id(after):
                    mailbox.mark_lagged()  # the tail already handed out entries this observer has not seen
        return mailbox

    def _leave(self, stream: tuple[str, str], mailbox: Mailbox) -> None:
        with self._lock:
            tail = self._tails.get(stream)
            if tail is not None:
                tail.mailboxes.discard(mailbox)
                tail.pushers.pop(mailbox, None)

    def _start_pushing(self, stream: tuple[str, str], mailbox: Mailbox, pusher: Pusher, last: str) -> bool:
        """Let the tail write to ``pusher`` directly if the observer is level with it."""
        with self._lock:
            tail = self._tails.get(stream)
            if tail is None or mailbox not in tail.mailboxes or tail.last != last or len(mailbox):
                return False
            if mailbox.flagged:  # lagged or closed: its reader has work first
                return False
            tail.mailboxes.discard(mailbox)
            tail.pushers[mailbox] = pusher
            return True

    def _stop_pushing(self, stream: tuple[str, str], mailbox: Mailbox) -> None:
        """Back to the mailbox (unless the tail already handed the observer back)."""
        with self._lock:
            tail = self._tails.get(stream)
            if tail is not None and tail.pushers.pop(mailbox, None) is not None:
                tail.mailboxes.add(mailbox)

    def _run_tail(self, stream: tuple[str, str], tail: _Tail) -> None:
        """Read the stream until no observer is left, the terminal event was read, or the
        message is gone."""
        gone = False
        try:
            gone = self._tail_loop(stream, tail)
        finally:  # the end, a bug or a kill: observers must not wait for a dead tail
            with self._lock:
                if self._tails.get(stream) is tail:
                    del self._tails[stream]
                    self._release_idle()
                orphans = [*tail.mailboxes, *tail.pushers]
                tail.mailboxes.clear()
                tail.pushers.clear()
            for mailbox in orphans:
                mailbox.close(gone=gone)

    def _read(self, tail: _Tail) -> list[tuple[str, dict[str, str]]] | None:
        """The next entries after ``tail.last`` (blocking), or None once the message is gone.

        The status is read right behind the ``XREAD`` in the same pipeline: Redis answers it as
        soon as the read returns, so checking that the entries belong to the message this tail
        started with costs no round trip. A delete wakes the read with its tombstone."""
        pipe = self.tail_client.pipeline(transaction=False)
        pipe.xread({tail.key: tail.last}, count=READ_COUNT, block=self.block_ms)
        pipe.hmget(tail.status_key, "status", "epoch")
        reply, (status, epoch) = pipe.execute()
        if status is None or (epoch or "") != tail.epoch:
            return None
        return reply[0][1] if reply else []

    def _tail_loop(self, stream: tuple[str, str], tail: _Tail) -> bool:
        """The tail's reads; True when it stopped because the message is gone."""
        while True:
            with self._lock:
                if not tail.mailboxes and not tail.pushers:
                    return False
            try:
                entries = self._read(tail)
            except redis.RedisError:
                time.sleep(RETRY_SECONDS)  # observers keep pinging; their own reads report a lasting outage
                continue
            if entries is None:
                return True
            if not entries:
                continue
            batch = Batch(tail.last, tuple(stored_event(i, d) for i, d in entries))
            ended = any(ev.is_terminal(item.type) for item in batch.events)
            with self._lock:
                tail.last = batch.events[-1].id
                receivers = list(tail.mailboxes)
                self._push(tail, batch, ended)
                if ended:
                    del self._tails[stream]
                    self._release_idle()
                    tail.mailboxes.clear()
            for mailbox in receivers:
                mailbox.put(batch)
            if ended:
                return False

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
        cursor = _Cursor(self.store, message_id, after, epoch)
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


class _Cursor:
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


def hub_client(url: str, name: str) -> redis.Redis:
    """A client for tails: one connection per tailed stream, never cut short while blocked."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_keepalive=True,
        health_check_interval=10,
        client_name=name,
    )
