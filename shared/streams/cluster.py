"""The live tail in Redis Cluster mode: streams of many slots, woken by sharded pub/sub.

In a cluster one ``XREAD`` may only name keys of one hash slot, and every message has a slot of
its own, so the multiplexed ``XREAD BLOCK`` of ``readers.py`` cannot serve many streams. Here
each reader (still at most ``max_readers`` per process, each with its streams) instead:

- subscribes (``SSUBSCRIBE``) to each of its streams' wake channels (``msg:{<sid>}:wake``, in the
  message's slot; the append, finish and delete scripts ``SPUBLISH`` the new entry id there),
  one pub/sub connection per cluster node that serves them;
- waits for a wake on any of those connections (or for a new stream, through a local socket);
- reads only the woken streams, with a non-blocking ``XREAD`` and the status check per stream,
  pipelined (one round trip per node).

A wake lost (a node failing over drops its subscribers) costs latency, never an event: every
``block_ms`` each reader reads all of its streams anyway, and a broken subscription makes the
next read cover all streams and subscribe again on the slot's new primary. Everything else
(tails, mailboxes, pushers, the epoch check, ``GONE`` on a delete's tombstone) is
``TailReaders``' own.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from shared.keys import message_keys
from shared.streams.contract import READ_COUNT, is_same_message
from shared.streams.readers import TailReaders
from shared.streams.reads import StreamReads
from shared.streams.runtime import StreamRuntime
from shared.streams.tails import TAIL_BLOCK_MS, Entries, Reader, Tail


def queue_tail_read(pipe: Any, message_id: str, after: str) -> None:
    """Add to ``pipe`` what a cluster reader reads of one woken stream: its entries after
    ``after`` (non-blocking ``XREAD``) and its status check; two replies."""
    keys = message_keys(message_id)
    pipe.xread({keys.events: after}, count=READ_COUNT)
    pipe.hmget(keys.status, "status", "epoch")


class _Wakes:
    """One reader's sharded subscriptions: a pub/sub connection per cluster node it needs, and
    a local socket pair that ``poke`` writes to (a new stream for the reader)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.pubsubs: dict[str, Any] = {}  # node name → its redis.client.PubSub (stubs lack ssubscribe)
        #: Subscribed channel → the node it is subscribed on.
        self.channels: dict[str, str] = {}
        self._inbox, self._outbox = socket.socketpair()
        self._inbox.setblocking(False)
        self._outbox.setblocking(False)

    def poke(self) -> None:
        """Make ``wait`` return now."""
        with contextlib.suppress(OSError):  # (full: a poke is pending anyway)
            self._outbox.send(b"!")

    def sync(self, wanted: set[str]) -> None:
        """Subscribe to ``wanted`` and to nothing else, each channel on its slot's primary now."""
        for channel in [channel for channel in self.channels if channel not in wanted]:
            name = self.channels.pop(channel)
            with contextlib.suppress(redis.RedisError):
                self.pubsubs[name].sunsubscribe(channel)
        for channel in wanted - set(self.channels):
            node = self.cluster.get_node_from_key(channel)
            pubsub = self.pubsubs.get(node.name)
            if pubsub is None:
                pubsub = self.cluster.get_redis_connection(node).pubsub(ignore_subscribe_messages=True)
                self.pubsubs[node.name] = pubsub
            pubsub.ssubscribe(channel)
            self.channels[channel] = node.name

    def wait(self, timeout: float) -> set[str] | None:
        """The channels woken within ``timeout`` (maybe none); None when a subscription broke
        (its channels are then subscribed again by the next ``sync``: read everything)."""
        sockets: dict[Any, str] = {}
        for name, pubsub in self.pubsubs.items():
            sock = getattr(pubsub.connection, "_sock", None)
            if sock is not None:
                sockets[sock] = name
        ready, _, _ = select.select([self._inbox, *sockets], [], [], timeout)
        with contextlib.suppress(OSError):
            self._inbox.recv(4096)
        woken: set[str] = set()
        broken = False
        for sock in ready:
            node = sockets.get(sock)
            if node is None:
                continue
            try:
                while (message := self.pubsubs[node].get_message(timeout=0)) is not None:
                    if message.get("type") == "smessage":
                        woken.add(message["channel"])
            except (redis.RedisError, OSError):
                self._drop(node)
                broken = True
        return None if broken else woken

    def _drop(self, name: str) -> None:
        """Forget a node's pub/sub connection (its node is gone or moved its slots)."""
        pubsub = self.pubsubs.pop(name)
        with contextlib.suppress(Exception):
            pubsub.reset()
        for channel in [channel for channel, node in self.channels.items() if node == name]:
            del self.channels[channel]

    def close(self) -> None:
        """Close every connection of this reader."""
        for name in list(self.pubsubs):
            self._drop(name)
        self._inbox.close()
        self._outbox.close()


@dataclass(eq=False)
class ReaderState:
    """What a cluster reader keeps between reads."""

    wakes: _Wakes
    #: Tails to read next (new, or woken).
    dirty: set[Tail] = field(default_factory=set)
    #: Tails the reader already knows (the others are new: read at once).
    known: set[Tail] = field(default_factory=set)
    #: When to read every tail regardless of wakes (monotonic seconds).
    full_at: float = 0.0


class ClusterTailReaders(TailReaders):
    """``TailReaders`` over a Redis Cluster: wakes by sharded pub/sub, pipelined reads."""

    def __init__(
        self,
        client: Any,
        tail_client: Any,
        *,
        mailbox_events: int = 1024,
        block_ms: int = TAIL_BLOCK_MS,
        max_readers: int = 8,
    ) -> None:
        """``client`` and ``tail_client``: the cluster client (``store.messages``); no socket
        ever blocks on it, so it needs no longer timeout."""
        self.redis = client
        self.tail_client = tail_client
        self.mailbox_events = mailbox_events
        self.block_ms = block_ms
        self.max_readers = max_readers
        self._tails: dict[tuple[str, str], Tail] = {}
        self._readers: list[Reader] = []
        self._lock = threading.Lock()
        self._states: dict[str, ReaderState] = {}

    def _state(self, reader: Reader) -> ReaderState:
        state = self._states.get(reader.wake_key)
        if state is None:
            state = self._states[reader.wake_key] = ReaderState(_Wakes(self.tail_client))
        return state

    def _run_reader(self, reader: Reader) -> None:
        try:
            super()._run_reader(reader)
        finally:
            state = self._states.pop(reader.wake_key, None)
            if state is not None:
                state.wakes.close()

    def _wake(self, reader: Reader) -> None:
        """A stream was added to ``reader``: its wait returns now."""
        self._state(reader).wakes.poke()

    def _release_idle(self) -> None:
        """(Each reader closes its own connections when it ends.)"""

    def _read(
        self, reader: Reader, live: list[Tail], positions: dict[str, str]
    ) -> list[tuple[Tail, Entries | None]]:
        """Wait for a wake (or a new stream, or ``block_ms``), then read the woken streams."""
        try:
            return self._read_woken(self._state(reader), live, positions)
        except RedisClusterException as exc:  # (not a RedisError: the base loop would die)
            raise redis.ConnectionError(str(exc)) from exc

    def _read_woken(
        self, state: ReaderState, live: list[Tail], positions: dict[str, str]
    ) -> list[tuple[Tail, Entries | None]]:
        by_channel = {message_keys(tail.stream[0]).wake: tail for tail in live}
        state.known &= set(live)
        state.dirty &= set(live)
        state.dirty |= set(live) - state.known
        state.known = set(live)
        state.wakes.sync(set(by_channel))
        now = time.monotonic()
        if now >= state.full_at:
            state.dirty = set(live)
            state.full_at = now + self.block_ms / 1000
        if not state.dirty:
            woken = state.wakes.wait(max(0.0, state.full_at - now))
            if woken is None:
                state.dirty = set(live)
            else:
                state.dirty = {by_channel[channel] for channel in woken if channel in by_channel}
                if not state.dirty:
                    return []
        reading = list(state.dirty)
        pipe = self.tail_client.pipeline(transaction=False)
        for tail in reading:
            queue_tail_read(pipe, tail.stream[0], positions.get(tail.key, tail.last))
        replies = pipe.execute()
        state.dirty.clear()
        found: list[tuple[Tail, Entries | None]] = []
        for index, tail in enumerate(reading):
            read, (status, epoch) = replies[2 * index], replies[2 * index + 1]
            entries = read[0][1] if read else []
            if len(entries) == READ_COUNT:
                state.dirty.add(tail)  # more to read: next round, without waiting
            if not is_same_message(status, epoch, tail.epoch):
                found.append((tail, None))
            elif entries:
                found.append((tail, entries))
        return found


class ClusterStreamRuntime(StreamRuntime):
    """``StreamRuntime`` over a Redis Cluster: the same replay, gap fill and observers, its live
    tail read by ``ClusterTailReaders``."""

    def __init__(
        self,
        client: Any,
        tail_client: Any,
        *,
        mailbox_events: int = 1024,
        block_ms: int = TAIL_BLOCK_MS,
        max_readers: int = 8,
    ) -> None:
        """``client`` and ``tail_client``: the cluster client (``store.messages``)."""
        StreamReads.__init__(self, client)
        self.tails = ClusterTailReaders(
            client, tail_client, mailbox_events=mailbox_events, block_ms=block_ms, max_readers=max_readers
        )
