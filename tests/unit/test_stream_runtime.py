"""The stream runtime's live tail on a real redis-server: order, completeness, slow readers, connections."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from shared import events as ev
from shared.store import COMPLETED, MessageStore
from shared.streams.contract import Batch, StoredEvent, Tick, Wake, parse_id
from shared.streams.mailbox import Mailbox
from shared.streams.reads import StreamReads
from shared.streams.runtime import StreamRuntime
from shared.streams.tails import tail_client_for_url

pytestmark = pytest.mark.integration


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def name() -> str:
    """A client name of this test's own, to count its connections."""
    return f"test-api-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_url: str, client: redis.Redis, name: str) -> MessageStore:
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=3, timeout=30, decode_responses=True, client_name=name
    )
    return MessageStore(redis.Redis(connection_pool=pool), retention_seconds=60, active_ttl_seconds=600)


@pytest.fixture
def runtime(redis_url: str, store: MessageStore, name: str) -> StreamRuntime:
    return StreamRuntime(
        store.redis, tail_client_for_url(redis_url, f"{name}-tail"), mailbox_events=1024, block_ms=200
    )


def start(store: MessageStore, message_id: str = "m1") -> None:
    """A processing message with its message_start and an open text block."""
    assert store.create(message_id, {"messages": []}, {"model": "x"})
    store.claim(message_id, "w", owner="w", lease_ms=600_000, max_resumes=0)
    store.append(
        message_id, [ev.message_start(message_id, "x", 1), ev.content_block_start(0, ev.text_block())]
    )


def finish(store: MessageStore, message_id: str = "m1") -> None:
    """End the message normally."""
    ending = [ev.content_block_stop(0), ev.message_delta("end_turn", None, 1), ev.message_stop()]
    store.finish(message_id, COMPLETED, ending)


def all_ids(store: MessageStore, message_id: str = "m1") -> list[str]:
    """Every stored event id, in order."""
    return [item.id for item in StreamReads(store.redis).replay(message_id)]


def tail_of(runtime: StreamRuntime, message_id: str) -> Any:
    """The runtime's tail of ``message_id`` (any epoch), or None."""
    with runtime.tails._lock:
        return next((tail for (mid, _), tail in runtime.tails._tails.items() if mid == message_id), None)


class Watcher:
    """A thread that follows a message through the runtime and records what it yields."""

    def __init__(
        self, runtime: StreamRuntime, message_id: str = "m1", after: str = "0-0", idle: float = 0.2
    ) -> None:
        self.items: list[StoredEvent] = []
        self.pings = 0
        self.gone = False
        self.gate = threading.Event()
        self.gate.set()
        self.done = threading.Event()
        self._iter = runtime.follow(message_id, after, idle_seconds=idle)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self._iter:
            self.gate.wait()
            if item is Tick.PING:
                self.pings += 1
            elif item is Tick.GONE:
                self.gone = True
            else:
                self.items.append(item)
        self.done.set()

    def ids(self) -> list[str]:
        return [item.id for item in self.items]


def test_observer_gets_replay_then_live_events_and_ends_after_terminal(store, runtime):
    """Stored events replay first, live ones follow in order, and the iterator ends at message_stop."""
    start(store)
    watcher = Watcher(runtime)
    wait_until(lambda: len(watcher.items) == 2)
    for index in range(50):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    finish(store)
    assert watcher.done.wait(20)
    assert watcher.ids() == all_ids(store)
    assert watcher.items[-1].type == "message_stop"


def test_many_observers_share_one_tail_and_get_every_event(store, runtime, client, name):
    """Fifty observers of one stream get every event through a single tail connection."""
    start(store)
    watchers = [Watcher(runtime) for _ in range(50)]
    wait_until(lambda: runtime.tail_count() == 1 and all(len(w.items) == 2 for w in watchers))
    for index in range(100):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    tails = [c for c in client.client_list() if c.get("name") == f"{name}-tail"]
    assert len(tails) == 1
    finish(store)
    for watcher in watchers:
        assert watcher.done.wait(20)
        assert watcher.ids() == all_ids(store)


def test_redis_connections_stay_bounded_for_many_observers(store, runtime, client, name):
    """Two hundred observers of one stream hold at most four Redis connections between them."""
    start(store)
    watchers = [Watcher(runtime) for _ in range(200)]
    wait_until(lambda: all(len(w.items) == 2 for w in watchers))
    for index in range(20):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    held = [c for c in client.client_list() if c.get("name", "").startswith(name)]
    assert len(held) <= 4, held
    finish(store)
    for watcher in watchers:
        assert watcher.done.wait(30)
        assert watcher.ids() == all_ids(store)


def test_slow_observer_falls_behind_alone_and_misses_nothing(redis_url, store):
    """A reader that stalls overflows its small mailbox, the others go on, and it later catches up exactly."""
    runtime = StreamRuntime(
        store.redis, tail_client_for_url(redis_url, "slow-tail"), mailbox_events=4, block_ms=200
    )
    start(store)
    fast = Watcher(runtime)
    slow = Watcher(runtime)
    wait_until(lambda: len(slow.items) == 2 and len(fast.items) == 2)
    slow.gate.clear()
    for index in range(200):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    finish(store)
    assert fast.done.wait(20)
    assert fast.ids() == all_ids(store)
    assert not slow.done.is_set()
    slow.gate.set()
    assert slow.done.wait(20)
    assert slow.ids() == all_ids(store)


def test_resume_from_a_cursor_yields_exactly_the_suffix(store, runtime):
    """Following after a stored id yields every later event once, none before it."""
    start(store)
    for index in range(10):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    ids = all_ids(store)
    watcher = Watcher(runtime, after=ids[5])
    wait_until(lambda: len(watcher.items) == len(ids) - 6)
    store.append("m1", [ev.text_delta(0, "more")])
    finish(store)
    assert watcher.done.wait(20)
    assert watcher.ids() == all_ids(store)[6:]


def test_idle_observer_gets_pings_and_ends_when_deleted(store, runtime):
    """With nothing new the observer gets idle ticks, and it ends once the message is deleted."""
    start(store)
    watcher = Watcher(runtime, idle=0.05)
    wait_until(lambda: watcher.pings >= 2)
    store.delete("m1")
    assert watcher.done.wait(20)
    assert watcher.ids() == [watcher.items[0].id, watcher.items[1].id]


def test_finished_message_needs_no_tail(store, runtime):
    """Observing a message that already ended replays it from Redis and starts no tail."""
    start(store)
    finish(store)
    items = list(runtime.follow("m1", "0-0", idle_seconds=1))
    assert [item.id for item in items] == all_ids(store)
    assert runtime.tail_count() == 0


def test_tail_stops_when_its_last_observer_leaves(store, runtime):
    """Closing every observer of a live stream stops its tail."""
    start(store)
    follower = runtime.follow("m1", "0-0", idle_seconds=0.05)
    assert next(follower) is not Tick.PING
    next(follower)
    next(follower)  # the first idle tick: now tailing
    assert runtime.tail_count() == 1
    follower.close()
    wait_until(lambda: runtime.tail_count() == 0)


def test_mailbox_is_bounded_and_reports_overflow():
    """A full mailbox refuses a batch and tells its reader to catch up."""
    mailbox = Mailbox(max_events=3)
    item = StoredEvent("1-0", "content_block_delta", "{}")
    assert mailbox.put(Batch("0-0", (item, item)))
    assert not mailbox.put(Batch("1-0", (item, item)))
    assert len(mailbox) == 2
    got = mailbox.get(1)
    assert isinstance(got, Batch) and got.prev == "0-0"
    assert mailbox.get(1) is Wake.CATCH_UP
    assert mailbox.get(0.01) is Wake.IDLE


def test_ids_compare_in_stream_order():
    """Stream ids order by milliseconds, then sequence, not as text."""
    assert parse_id("10-0") > parse_id("9-5")
    assert parse_id("9-10") > parse_id("9-9")
    assert parse_id("0") == (0, 0)


def test_events_ready_at_once_come_in_one_chunk(store, runtime):
    """An observer that fell behind gets what piled up as one chunk (one write), in order."""
    start(store)
    chunks = runtime.follow_chunks("m1", "0-0", idle_seconds=5)
    assert len(next(chunks)) == 2
    for index in range(5):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    piled = next(chunks)
    assert [item.id for item in piled] == all_ids(store)[2:]
    finish(store)
    rest = [item for chunk in chunks if not isinstance(chunk, Tick) for item in chunk]
    assert [item.type for item in rest] == ["content_block_stop", "message_delta", "message_stop"]


def test_joining_behind_a_running_tail_asks_for_a_catch_up(store, runtime):
    """A mailbox joining a tail that already handed out later entries is told to catch up at once."""
    start(store)
    first = Watcher(runtime)
    wait_until(lambda: runtime.tail_count() == 1 and len(first.items) == 2)
    store.append("m1", [ev.text_delta(0, "a")])
    wait_until(lambda: len(first.items) == 3)
    stream = ("m1", store.get_field("m1", "epoch") or "")
    behind = runtime.tails.join(stream, all_ids(store)[0])
    level = runtime.tails.join(stream, all_ids(store)[-1])
    assert behind.get(0) is Wake.CATCH_UP
    assert level.get(0) is Wake.IDLE
    runtime.tails.leave(stream, behind)
    runtime.tails.leave(stream, level)
    finish(store)
    assert first.done.wait(20)


class FakePusher:
    """Writes batches to ``wire`` like a socket would; refuses (keeping the batch) while ``full``."""

    def __init__(self) -> None:
        self.wire: list[StoredEvent] = []
        self.last: str | None = None
        self.ended = False
        self.full = False
        self.pushed: list[StoredEvent] = []
        self.pending: list[StoredEvent] = []
        self.refused = 0
        self._lock = threading.Lock()

    def push(self, batch: Batch) -> bool:
        with self._lock:
            self.last, self.ended = batch.events[-1].id, batch.ended
            if self.full:
                self.pending.extend(batch.events)
                self.refused += 1
                return False
            self.pushed.extend(batch.events)
            self.wire.extend(batch.events)
            return True

    def flush(self) -> list[StoredEvent]:
        with self._lock:
            flushed, self.pending = self.pending, []
            return flushed


def follow_with(
    runtime: StreamRuntime, pusher: FakePusher, got: list[StoredEvent], done: threading.Event
) -> None:
    """Consume a pushing observer as the SSE body does: flush what the pusher kept, then the chunk."""
    for chunk in runtime.follow_chunks("m1", "0-0", idle_seconds=0.05, pusher=pusher):
        for items in (pusher.flush(), [] if isinstance(chunk, Tick) else chunk):
            got.extend(items)
            pusher.wire.extend(items)
    pusher.wire.extend(pusher.flush())
    done.set()


def test_caught_up_observers_get_live_events_pushed_by_the_tail(store, runtime):
    """Once level with the tail, an observer's live events are written by the tail's pusher, in order."""
    start(store)
    pushers = [FakePusher() for _ in range(20)]
    yielded: list[list[StoredEvent]] = [[] for _ in pushers]
    done = [threading.Event() for _ in pushers]
    for pusher, got, flag in zip(pushers, yielded, done, strict=True):
        threading.Thread(target=follow_with, args=(runtime, pusher, got, flag), daemon=True).start()
    wait_until(lambda: runtime.tail_count() == 1 and all(len(got) == 2 for got in yielded))
    wait_until(lambda: len(tail_of(runtime, "m1").pushers) == len(pushers))
    for index in range(30):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    finish(store)
    for pusher, got, flag in zip(pushers, yielded, done, strict=True):
        assert flag.wait(20)
        assert [item.id for item in got] == all_ids(store)[:2]
        assert [item.id for item in pusher.pushed] == all_ids(store)[2:]
        assert [item.id for item in pusher.wire] == all_ids(store)
        assert pusher.ended


def test_pusher_that_cannot_keep_up_falls_back_to_its_mailbox_and_misses_nothing(store, runtime):
    """A refused push hands the observer back: it writes what the pusher kept, then the rest, in order."""
    start(store)
    pusher = FakePusher()
    got: list[StoredEvent] = []
    done = threading.Event()
    threading.Thread(target=follow_with, args=(runtime, pusher, got, done), daemon=True).start()
    wait_until(
        lambda: tail_of(runtime, "m1") is not None and pusher in tail_of(runtime, "m1").pushers.values()
    )
    store.append("m1", [ev.text_delta(0, "pushed")])
    wait_until(lambda: len(pusher.pushed) == 1)
    pusher.full = True
    for index in range(20):
        store.append("m1", [ev.text_delta(0, f"t{index} ")])
    wait_until(lambda: pusher.refused >= 1 and len(got) >= 2 + 20)
    pusher.full = False
    wait_until(lambda: pusher in tail_of(runtime, "m1").pushers.values())  # level again: pushed once more
    store.append("m1", [ev.text_delta(0, "late")])
    finish(store)
    assert done.wait(20)
    assert [item.id for item in pusher.wire] == all_ids(store)
    assert all_ids(store)[-4] in [item.id for item in pusher.pushed]  # the "late" delta


def test_deleting_a_message_ends_its_idle_observers_at_once(redis_url, store, name):
    """A delete wakes the blocked tail (its tombstone): observers get GONE long before the tail's
    own read or any ping would time out (both 120 s here)."""
    runtime = StreamRuntime(
        store.redis, tail_client_for_url(redis_url, f"{name}-tail", block_ms=120_000), block_ms=120_000
    )
    start(store)
    watchers = [Watcher(runtime, idle=120) for _ in range(3)]
    wait_until(lambda: runtime.tail_count() == 1 and all(len(w.items) == 2 for w in watchers))
    store.delete("m1")
    for watcher in watchers:
        assert watcher.done.wait(20)
        assert watcher.gone
    assert [item.type for item in watchers[0].items] == ["message_start", "content_block_start"]
    wait_until(lambda: runtime.tail_count() == 0)


def test_an_observer_never_sees_the_events_of_a_message_created_anew_with_its_id(store, runtime):
    """Delete and re-create the id while observed: the first observer ends GONE, with none of
    the new message's events; a new observer sees only the new one."""
    start(store)
    old = Watcher(runtime, idle=60)
    wait_until(lambda: len(old.items) == 2)
    old.gate.clear()  # hold the observer so the delete and the re-creation both land first
    store.delete("m1")
    start(store)
    store.append("m1", [ev.text_delta(0, "new message")])
    old.gate.set()
    assert old.done.wait(20)
    assert old.gone
    assert all("new message" not in item.data for item in old.items)
    finish(store)
    new = list(runtime.follow("m1", "0-0", idle_seconds=0.05))
    assert any(not isinstance(item, Tick) and "new message" in item.data for item in new)


def test_recreating_an_id_removes_the_tombstone_of_the_deleted_one(store, runtime):
    """A re-created id starts with an empty stream: the old message's tombstone is not an event."""
    start(store)
    store.delete("m1")
    start(store)
    types = [item.type for item in StreamReads(store.redis).replay("m1")]
    assert types == ["message_start", "content_block_start"]


def test_following_a_message_that_does_not_exist_is_gone_at_once(runtime):
    """No status: the observer gets GONE without tailing anything."""
    assert list(runtime.follow("nope", "0-0", idle_seconds=5)) == [Tick.GONE]
    assert runtime.tail_count() == 0


def test_many_streams_share_a_bounded_set_of_reader_connections(redis_url, store, client, name):
    """Thirty observed streams on a runtime of two readers: two tail connections, every observer
    gets every event of its own stream and nothing of another's."""
    runtime = StreamRuntime(
        store.redis,
        tail_client_for_url(redis_url, f"{name}-tail", block_ms=60_000),
        block_ms=60_000,
        max_readers=2,
    )
    ids = [f"s{index}" for index in range(30)]
    for message_id in ids:
        start(store, message_id)
    watchers = {message_id: Watcher(runtime, message_id, idle=60) for message_id in ids}
    wait_until(lambda: runtime.tail_count() == 30 and all(len(w.items) == 2 for w in watchers.values()))
    assert runtime.reader_count() == 2
    for message_id in ids:
        store.append(message_id, [ev.text_delta(0, f"only {message_id} ")])
        finish(store, message_id)
    for message_id, watcher in watchers.items():
        assert watcher.done.wait(20)
        assert watcher.ids() == all_ids(store, message_id)
        texts = [item.data for item in watcher.items if item.type == "content_block_delta"]
        assert len(texts) == 1 and f"only {message_id} " in texts[0]
    tails = [c for c in client.client_list() if c.get("name") == f"{name}-tail"]
    assert len(tails) <= 2
    wait_until(lambda: runtime.reader_count() == 0)


def test_a_stream_added_to_a_blocked_reader_is_read_at_once(redis_url, store, name):
    """A reader blocked for a minute on one stream reads a stream added to it at once (its wake
    key), not when its read times out."""
    runtime = StreamRuntime(
        store.redis,
        tail_client_for_url(redis_url, f"{name}-tail", block_ms=60_000),
        block_ms=60_000,
        max_readers=1,
    )
    start(store, "first")
    first = Watcher(runtime, "first", idle=60)
    wait_until(lambda: len(first.items) == 2 and runtime.reader_count() == 1)
    time.sleep(0.2)  # let the reader block on "first" alone
    start(store, "second")
    second = Watcher(runtime, "second", idle=60)
    wait_until(lambda: len(second.items) == 2 and runtime.tail_count() == 2)
    store.append("second", [ev.text_delta(0, "live")])
    wait_until(lambda: len(second.items) == 3, timeout=20)  # the reader's own read lasts a minute
    assert runtime.reader_count() == 1
    for message_id in ("first", "second"):
        finish(store, message_id)
    assert first.done.wait(20) and second.done.wait(20)


def test_deleting_one_of_many_multiplexed_streams_ends_only_its_observers(redis_url, store, name):
    """On a shared reader, a delete ends the deleted stream's observers; the others go on."""
    runtime = StreamRuntime(
        store.redis,
        tail_client_for_url(redis_url, f"{name}-tail", block_ms=60_000),
        block_ms=60_000,
        max_readers=1,
    )
    for message_id in ("keep", "drop"):
        start(store, message_id)
    keep, drop = Watcher(runtime, "keep", idle=60), Watcher(runtime, "drop", idle=60)
    wait_until(lambda: len(keep.items) == 2 and len(drop.items) == 2 and runtime.tail_count() == 2)
    store.delete("drop")
    assert drop.done.wait(20) and drop.gone
    store.append("keep", [ev.text_delta(0, "still here")])
    finish(store, "keep")
    assert keep.done.wait(20) and not keep.gone
    assert keep.ids() == all_ids(store, "keep")
