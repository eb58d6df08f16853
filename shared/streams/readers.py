"""The live tail: a few blocking Redis reads per API process, each feeding its streams' observers.

The first observer of a stream gives it a *tail* (its position and its observers), and a
*reader* reads it: a thread (a greenlet under gunicorn's gevent workers, which patch
``threading``) with ``XREAD BLOCK`` on a connection of its own. Up to ``max_readers`` streams get
a reader each; past it, streams share the least busy reader, one ``XREAD`` for all of its
streams, woken through a wake key of its own when a stream is added. Every batch is checked
against the message's creation stamp before it goes out; a delete's tombstone wakes the readers
of the stream, which then end its observers with ``Wake.GONE``.
"""

from __future__ import annotations

import secrets
import threading
import time

import redis

from shared import events as ev
from shared.keys import hub_wake, message_keys
from shared.streams.contract import READ_COUNT, Batch, Pusher, is_same_message, parse_id, stored_event
from shared.streams.mailbox import Mailbox
from shared.streams.tails import RETRY_SECONDS, TAIL_BLOCK_MS, WAKE_TTL_SECONDS, Entries, Reader, Stream, Tail


class TailReaders:
    """The tails of one process: a bounded set of readers, each with its streams, feeding mailboxes
    and pushers (``StreamRuntime`` is the observers' side).

    ``client`` carries the short commands (a wake); ``tail_client`` the blocked reads, one
    connection per reader (``tail_client``'s socket timeout must outlast ``block_ms``)."""

    def __init__(
        self,
        client: redis.Redis,
        tail_client: redis.Redis,
        *,
        mailbox_events: int = 1024,
        block_ms: int = TAIL_BLOCK_MS,
        max_readers: int = 8,
    ) -> None:
        timeout = tail_client.connection_pool.connection_kwargs.get("socket_timeout")
        if timeout is not None and timeout * 1000 <= block_ms:
            raise ValueError(f"the tail client's socket timeout ({timeout} s) must outlast block_ms")
        self.redis = client
        self.tail_client = tail_client
        self.mailbox_events = mailbox_events
        self.block_ms = block_ms
        self.max_readers = max_readers
        #: Tails by (message id, epoch): a deleted and re-created id never shares a tail.
        self._tails: dict[Stream, Tail] = {}
        self._readers: list[Reader] = []
        self._lock = threading.Lock()

    # -- tails ------------------------------------------------------------

    def join(self, stream: Stream, after: str) -> Mailbox:
        """A new observer of ``stream`` that has seen everything up to ``after``: its mailbox
        (flagged to catch up first when the tail is already past ``after``)."""
        mailbox = Mailbox(self.mailbox_events)
        woken: Reader | None = None
        with self._lock:
            tail = self._tails.get(stream)
            if tail is None:
                keys = message_keys(stream[0])
                tail = Tail(stream, keys.events, keys.status, after)
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

    def _assign(self, tail: Tail) -> Reader | None:
        """Give ``tail`` a reader (holding the lock): a new one while there are fewer than
        ``max_readers``, else the least busy, which must then be woken (returned)."""
        if len(self._readers) < self.max_readers:
            reader = Reader(hub_wake(secrets.token_hex(8)), {tail})
            self._readers.append(reader)
            name = f"sluice-tail-{tail.stream[0]}"
            threading.Thread(target=self._run_reader, args=(reader,), name=name, daemon=True).start()
            return None
        reader = min(self._readers, key=lambda each: len(each.tails))
        reader.tails.add(tail)
        return reader

    def _wake(self, reader: Reader) -> None:
        """Make ``reader``'s blocked ``XREAD`` return, so that it reads its new stream too."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(reader.wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(reader.wake_key, WAKE_TTL_SECONDS)
            pipe.execute()
        except redis.RedisError:
            pass  # the reader's next XREAD (within block_ms) includes the stream anyway

    def leave(self, stream: Stream, mailbox: Mailbox) -> None:
        """The observer of ``mailbox`` is done with ``stream``."""
        with self._lock:
            tail = self._tails.get(stream)
            if tail is not None:
                tail.mailboxes.discard(mailbox)
                tail.pushers.pop(mailbox, None)

    def start_pushing(self, stream: Stream, mailbox: Mailbox, pusher: Pusher, last: str) -> bool:
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

    def stop_pushing(self, stream: Stream, mailbox: Mailbox) -> None:
        """Back to the mailbox (unless the reader already handed the observer back)."""
        with self._lock:
            tail = self._tails.get(stream)
            if tail is not None and tail.pushers.pop(mailbox, None) is not None:
                tail.mailboxes.add(mailbox)

    # -- readers ----------------------------------------------------------

    def _run_reader(self, reader: Reader) -> None:
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

    def _reader_loop(self, reader: Reader) -> None:
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
        self, reader: Reader, live: list[Tail], positions: dict[str, str]
    ) -> list[tuple[Tail, Entries | None]]:
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
            (tail, got[tail.key] if is_same_message(status, epoch, tail.epoch) else None)
            for tail, (status, epoch) in zip(fresh, states, strict=True)
        ]

    def _deliver(self, tail: Tail, entries: Entries) -> bool:
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

    def _end(self, reader: Reader, tail: Tail, *, gone: bool) -> None:
        """Stop reading ``tail``; when the message is gone, its observers end with ``GONE``."""
        with self._lock:
            reader.tails.discard(tail)
            self._drop(tail)
        if gone:
            self._close(tail, gone=True)

    def _drop(self, tail: Tail) -> None:
        """Forget ``tail`` (holding the lock); a new observer of its stream starts a new one."""
        if self._tails.get(tail.stream) is tail:
            del self._tails[tail.stream]

    def _close(self, tail: Tail, *, gone: bool) -> None:
        """Tell every observer of ``tail`` that it stopped early (not holding the lock)."""
        with self._lock:
            orphans = [*tail.mailboxes, *tail.pushers]
            tail.mailboxes.clear()
            tail.pushers.clear()
        for mailbox in orphans:
            mailbox.close(gone=gone)

    @staticmethod
    def _push(tail: Tail, batch: Batch, ended: bool) -> None:
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
