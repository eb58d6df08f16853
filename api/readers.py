"""The hub's readers: a few blocking Redis reads per API process, each feeding its streams' observers.

The first observer of a stream gives it a *tail* (its position and its observers), and a
*reader* reads it: a thread (a greenlet under gunicorn's gevent workers) with ``XREAD BLOCK``
on a connection of its own. Up to ``max_readers`` streams get a reader each; past it, streams
share the least busy reader, one ``XREAD`` for all of its streams, woken through a wake key of
its own when a stream is added. Every batch is checked against the message's creation stamp
before it goes out; a delete's tombstone wakes the readers of the stream, which then end its
observers with ``Wake.GONE``.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

import redis

from api.cursor import READ_COUNT
from api.mailbox import Batch, Mailbox, Pusher, parse_id
from shared import events as ev
from shared.keys import hub_wake, message_keys
from shared.records import stored_event
from shared.redis_client import reader_client
from shared.settings import SharedSettings
from shared.store import MessageStore

#: How long one reader ``XREAD`` blocks; a reader whose streams all ended lingers at most this long.
TAIL_BLOCK_MS = 2000
#: Pause before a reader retries after a Redis error.
RETRY_SECONDS = 0.5
#: TTL of a reader's wake key (renewed by every wake).
WAKE_TTL_SECONDS = 600

Stream = tuple[str, str]
Entries = list[tuple[str, dict[str, str]]]


@dataclass(eq=False)
class _Tail:
    """One stream in this process: where its reader is, and who observes it."""

    stream: Stream
    key: str
    #: The status hash, read with a batch to see that the message is still the same one.
    status_key: str
    last: str
    #: Observers fed through their mailboxes.
    mailboxes: set[Mailbox] = field(default_factory=set)
    #: Caught-up observers the reader writes to directly (not in ``mailboxes`` meanwhile).
    pushers: dict[Mailbox, Pusher] = field(default_factory=dict)

    @property
    def epoch(self) -> str:
        return self.stream[1]

    @property
    def observed(self) -> bool:
        return bool(self.mailboxes or self.pushers)


@dataclass(eq=False)
class _Reader:
    """One connection's worth of tails, read with one ``XREAD`` (plus the reader's wake key)."""

    wake_key: str
    tails: set[_Tail] = field(default_factory=set)
    wake_last: str = "0-0"


class TailReaders:
    """The tails of one process: a bounded set of readers, each with its streams, feeding mailboxes
    and pushers (``Hub`` adds the observers' side)."""

    def __init__(
        self,
        store: MessageStore,
        tail_client: redis.Redis,
        *,
        mailbox_events: int = 1024,
        block_ms: int = TAIL_BLOCK_MS,
        max_readers: int = 8,
    ) -> None:
        timeout = tail_client.connection_pool.connection_kwargs.get("socket_timeout")
        if timeout is not None and timeout * 1000 <= block_ms:
            raise ValueError(f"the tail client's socket timeout ({timeout} s) must outlast block_ms")
        self.store = store
        self.tail_client = tail_client
        self.mailbox_events = mailbox_events
        self.block_ms = block_ms
        self.max_readers = max_readers
        #: Tails by (message id, epoch): a deleted and re-created id never shares a tail.
        self._tails: dict[Stream, _Tail] = {}
        self._readers: list[_Reader] = []
        self._lock = threading.Lock()

    # -- tails ------------------------------------------------------------

    def _join(self, stream: Stream, after: str) -> Mailbox:
        mailbox = Mailbox(self.mailbox_events)
        woken: _Reader | None = None
        with self._lock:
            tail = self._tails.get(stream)
            if tail is None:
                keys = message_keys(stream[0])
                tail = _Tail(stream, keys.events, keys.status, after)
                tail.mailboxes.add(mailbox)
                self._tails[stream] = tail
                woken = self._assign(tail)
            else:
                tail.mailboxes.add(mailbox)
                if parse_id(tail.last) > parse_id(after):
                    mailbox.mark_lagged()  # the tail already handed out entries this observer has not seen
        if woken is not None:
            self._wake(woken)
        return mailbox

    def _assign(self, tail: _Tail) -> _Reader | None:
        """Give ``tail`` a reader (holding the lock): a new one while there are fewer than
        ``max_readers``, else the least busy, which must then be woken (returned)."""
        if len(self._readers) < self.max_readers:
            reader = _Reader(hub_wake(secrets.token_hex(8)), {tail})
            self._readers.append(reader)
            name = f"sluice-tail-{tail.stream[0]}"
            threading.Thread(target=self._run_reader, args=(reader,), name=name, daemon=True).start()
            return None
        reader = min(self._readers, key=lambda each: len(each.tails))
        reader.tails.add(tail)
        return reader

    def _wake(self, reader: _Reader) -> None:
        """Make ``reader``'s blocked ``XREAD`` return, so that it reads its new stream too."""
        try:
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.xadd(reader.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(reader.wake_key, WAKE_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError:
            pass  # the reader's next XREAD (within block_ms) includes the stream anyway

    def _leave(self, stream: Stream, mailbox: Mailbox) -> None:
        with self._lock:
            tail = self._tails.get(stream)
            if tail is not None:
                tail.mailboxes.discard(mailbox)
                tail.pushers.pop(mailbox, None)

    def _start_pushing(self, stream: Stream, mailbox: Mailbox, pusher: Pusher, last: str) -> bool:
        """Let the reader write to ``pusher`` directly if the observer is level with the tail."""
        with self._lock:
            tail = self._tails.get(stream)
            if tail is None or mailbox not in tail.mailboxes or tail.last != last or len(mailbox):
                return False
            if mailbox.flagged:  # lagged or closed: its reader has work first
                return False
            tail.mailboxes.discard(mailbox)
            tail.pushers[mailbox] = pusher
            return True

    def _stop_pushing(self, stream: Stream, mailbox: Mailbox) -> None:
        """Back to the mailbox (unless the reader already handed the observer back)."""
        with self._lock:
            tail = self._tails.get(stream)
            if tail is not None and tail.pushers.pop(mailbox, None) is not None:
                tail.mailboxes.add(mailbox)

    # -- readers ----------------------------------------------------------

    def _run_reader(self, reader: _Reader) -> None:
        """Read the reader's streams until none is left; a bug or a kill must not leave
        observers waiting for a dead reader."""
        try:
            self._reader_loop(reader)
        finally:
            with self._lock:
                if reader in self._readers:
                    self._readers.remove(reader)
                orphans = list(reader.tails)
                reader.tails.clear()
                for tail in orphans:
                    self._drop(tail)
                self._release_idle()
            for tail in orphans:
                self._close(tail, gone=False)

    def _reader_loop(self, reader: _Reader) -> None:
        while True:
            with self._lock:
                for tail in [tail for tail in reader.tails if not tail.observed]:
                    reader.tails.discard(tail)
                    self._drop(tail)
                if not reader.tails:
                    self._readers.remove(reader)
                    self._release_idle()
                    return
                live = list(reader.tails)
                positions = {reader.wake_key: reader.wake_last, **{tail.key: tail.last for tail in live}}
            try:
                read = self._read(reader, live, positions)
            except redis.RedisError:
                time.sleep(RETRY_SECONDS)  # observers keep pinging; their own reads report a lasting outage
                continue
            for tail, entries in read:
                if entries is None:
                    self._end(reader, tail, gone=True)
                elif self._deliver(tail, entries):
                    self._end(reader, tail, gone=False)

    def _read(
        self, reader: _Reader, live: list[_Tail], positions: dict[str, str]
    ) -> list[tuple[_Tail, Entries | None]]:
        """The next entries of each of ``live`` that has some (blocking), None for a tail whose
        message is gone.

        A lone stream's status is read right behind the ``XREAD`` in the same pipeline (Redis
        answers it as soon as the read returns: no extra round trip); a shared read checks the
        streams that got entries in one more pipelined round trip. A delete wakes the read with
        its tombstone."""
        pipe = self.tail_client.pipeline(transaction=False)
        pipe.xread(positions, count=READ_COUNT, block=self.block_ms)
        if len(live) == 1:
            pipe.hmget(live[0].status_key, "status", "epoch")
        replies = pipe.execute()
        got = {key: entries for key, entries in (replies[0] or []) if entries}
        woken = got.pop(reader.wake_key, None)
        if woken:
            reader.wake_last = woken[-1][0]
        fresh = [tail for tail in live if tail.key in got]
        if not fresh:
            return []
        if len(live) == 1:
            states = [replies[1]]
        else:
            check = self.tail_client.pipeline(transaction=False)
            for tail in fresh:
                check.hmget(tail.status_key, "status", "epoch")
            states = check.execute()
        return [
            (tail, None if status is None or (epoch or "") != tail.epoch else got[tail.key])
            for tail, (status, epoch) in zip(fresh, states, strict=True)
        ]

    def _deliver(self, tail: _Tail, entries: Entries) -> bool:
        """Hand ``entries`` to the tail's observers; True when they end with the terminal event."""
        batch = Batch(tail.last, tuple(stored_event(i, d) for i, d in entries))
        ended = any(ev.is_terminal(item.type) for item in batch.events)
        with self._lock:
            tail.last = batch.events[-1].id
            receivers = list(tail.mailboxes)
            self._push(tail, batch, ended)
        for mailbox in receivers:
            mailbox.put(batch)
        return ended

    def _end(self, reader: _Reader, tail: _Tail, *, gone: bool) -> None:
        """Stop reading ``tail``; when the message is gone, its observers end with ``GONE``."""
        with self._lock:
            reader.tails.discard(tail)
            self._drop(tail)
        if gone:
            self._close(tail, gone=True)

    def _drop(self, tail: _Tail) -> None:
        """Forget ``tail`` (holding the lock); a new observer of its stream starts a new one."""
        if self._tails.get(tail.stream) is tail:
            del self._tails[tail.stream]

    def _close(self, tail: _Tail, *, gone: bool) -> None:
        """Tell every observer of ``tail`` that it stopped early (not holding the lock)."""
        with self._lock:
            orphans = [*tail.mailboxes, *tail.pushers]
            tail.mailboxes.clear()
            tail.pushers.clear()
        for mailbox in orphans:
            mailbox.close(gone=gone)

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
        """With no reader left, close the idle tail connections (called holding the lock)."""
        if not self._readers:
            self.tail_client.connection_pool.disconnect(inuse_connections=False)

    def tail_count(self) -> int:
        """How many streams this process tails now."""
        with self._lock:
            return len(self._tails)

    def reader_count(self) -> int:
        """How many readers (tail connections) this process runs now."""
        with self._lock:
            return len(self._readers)


def hub_client(url: str, name: str, *, block_ms: int = TAIL_BLOCK_MS) -> redis.Redis:
    """A client for readers of the Redis at ``url``: one connection per reader, never cut short
    while blocked (its socket timeout outlasts a blocked read by 10 s)."""
    return tail_client(SharedSettings(redis_url=url), name, block_ms=block_ms)


def tail_client(settings: SharedSettings, name: str, *, block_ms: int = TAIL_BLOCK_MS) -> redis.Redis:
    """``hub_client`` for the deployment's Redis (a URL or a Sentinel-managed primary)."""
    return reader_client(settings, name, block_ms=block_ms)
