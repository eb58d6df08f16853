"""The stream contract and the runtime's non-blocking reads, on fakeredis and on a real redis-server."""

import pytest

from shared import events as ev
from shared.store import COMPLETED
from shared.streams.contract import (
    START,
    TOMBSTONE,
    Batch,
    InvalidCursor,
    StoredEvent,
    StreamCursor,
    StreamGone,
    Tick,
    Wake,
    epoch_of,
    is_same_message,
    parse_cursor,
    parse_id,
    stored_event,
)
from shared.streams.reads import Cursor, StreamReads


def _create(store, message_id="m1"):
    admission = store.create(message_id, {"model": "default", "messages": []}, {"model": "default"})
    assert admission.outcome == "created"


def _claim(store, message_id, worker):
    return store.claim(message_id, worker, owner=worker, lease_ms=10_000, max_resumes=3).outcome


@pytest.fixture
def reads(store):
    """The runtime's reads on the store's client (fakeredis or a real redis-server)."""
    return StreamReads(store.redis)


# -- the contract --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cursor"), [("0", START), ("0-0", START), (" 17-3 ", "17-3"), ("5-0", "5-0")]
)
def test_parse_cursor_normalises_the_start_and_strips_spaces(raw, cursor):
    """``0`` and ``0-0`` both mean the start; surrounding spaces of a header are ignored."""
    assert parse_cursor(raw) == cursor


@pytest.mark.parametrize("raw", ["abc", "1-", "-1", "1-2-3", "", "$", ">", "1" * 21 + "-0"])
def test_parse_cursor_refuses_what_is_not_an_entry_id(raw):
    """Anything but ``0`` or ``<ms>-<seq>`` (XREAD's ``$``, a group's ``>`` included) is InvalidCursor."""
    with pytest.raises(InvalidCursor):
        parse_cursor(raw)


def test_parse_id_orders_ids_as_the_stream_does():
    """Ids compare numerically by (ms, seq), not as strings."""
    assert parse_id("10-0") > parse_id("9-5")
    assert parse_id("9-10") > parse_id("9-9")
    assert parse_id("0") == (0, 0)


def test_an_entry_is_one_field_whose_type_is_read_from_its_prefix():
    """``stored_event`` takes the type from the encoded event's first key (``d`` is the only field)."""
    encoded = ev.encode(ev.text_delta(0, "hi"))
    assert stored_event("1-0", {"d": encoded}) == StoredEvent("1-0", "content_block_delta", encoded)
    assert stored_event("2-0", {"d": TOMBSTONE}).type == "sluice_deleted"


def test_epoch_binding_needs_the_status_and_the_same_stamp():
    """A message is the same one only while its status exists with the stamp the reader bound to."""
    assert epoch_of({"status": "pending"}) == ""
    assert is_same_message("pending", "e1", "e1")
    assert is_same_message("pending", None, "")
    assert not is_same_message(None, None, "")
    assert not is_same_message("pending", "e2", "e1")


def test_signals_are_distinct_typed_values():
    """Ticks and wakes are enum members, never None, True or an empty list standing for a signal."""
    assert {tick.value for tick in Tick} == {"ping", "flush", "gone"}
    assert {wake.value for wake in Wake} == {"idle", "catch_up", "gone"}
    assert all(signal for signal in [*Tick, *Wake])


def test_a_batch_knows_whether_it_ends_the_stream():
    """``Batch.ended`` is True only when its last event is terminal."""
    delta = StoredEvent("1-0", "content_block_delta", "{}")
    stop = StoredEvent("2-0", "message_stop", "{}")
    assert Batch("0-0", (delta, stop)).ended
    assert not Batch("0-0", (delta,)).ended


# -- replay, cursors, gap fill ---------------------------------------------------------------------


def test_replay_of_an_unknown_message_is_empty(reads):
    """A message that never existed replays nothing (the caller decides what that means)."""
    assert reads.replay("nope") == []


def test_read_after_a_cursor_is_exclusive(store, reads):
    """Reading after an id gives exactly the later events."""
    _create(store)
    _claim(store, "m1", "w")
    store.append("m1", [ev.message_start("m1", "d", 1), ev.text_delta(0, "a"), ev.text_delta(0, "b")])
    everything = reads.replay("m1")
    assert len(everything) == 3
    epoch = reads.current_epoch("m1")
    assert epoch is not None
    assert reads.read_after("m1", everything[0].id, epoch=epoch) == everything[1:]
    assert reads.read_after("m1", everything[0].id, epoch=epoch, count=1) == everything[1:2]
    assert reads.check_cursor("m1", everything[1].id) == StreamCursor(everything[1].id, ended=False)


def test_a_cursor_at_the_terminal_event_is_ended(store, reads):
    """Resuming after message_stop has nothing to wait for: the cursor says so."""
    _create(store)
    _claim(store, "m1", "w")
    store.append("m1", [ev.message_start("m1", "d", 1)])
    store.finish("m1", COMPLETED, [ev.message_delta("end_turn", None, 1), ev.message_stop()])
    last = reads.replay("m1")[-1]
    assert reads.check_cursor("m1", last.id) == StreamCursor(last.id, ended=True)
    assert reads.check_cursor("m1", "0") == StreamCursor("0-0", ended=False)


@pytest.mark.parametrize("cursor", ["abc", "1-", "-1", "1-2-3", ""])
def test_malformed_cursor_is_refused(reads, cursor):
    """A cursor that is not <ms>-<seq> raises."""
    with pytest.raises(InvalidCursor):
        reads.check_cursor("m1", cursor)


def test_unknown_cursor_is_refused(store, reads):
    """A well-formed cursor naming no stored event raises instead of skipping silently."""
    _create(store)
    with pytest.raises(InvalidCursor):
        reads.check_cursor("m1", "12345-0")


def test_gap_fill_of_a_deleted_or_recreated_message_is_gone(store, reads):
    """A read bound to one creation raises StreamGone once the id is deleted or names a new message."""
    _create(store)
    epoch = reads.current_epoch("m1")
    assert epoch is not None and reads.is_current("m1", epoch)
    store.delete("m1")
    assert reads.current_epoch("m1") is None
    with pytest.raises(StreamGone):
        reads.read_after("m1", START, epoch=epoch)
    _create(store)  # the same id, created anew: a new stamp
    assert reads.current_epoch("m1") not in (None, epoch)
    assert not reads.is_current("m1", epoch)
    with pytest.raises(StreamGone):
        reads.read_after("m1", START, epoch=epoch)


def test_cursor_yields_each_event_once_and_stops_at_the_terminal_event(store, reads):
    """An observer's cursor skips what it has seen, fills a batch's gap first and ends at message_stop."""
    _create(store)
    _claim(store, "m1", "w")
    store.append("m1", [ev.message_start("m1", "d", 1), ev.text_delta(0, "a"), ev.text_delta(0, "b")])
    store.finish("m1", COMPLETED, [ev.message_delta("end_turn", None, 1), ev.message_stop()])
    stored = reads.replay("m1")
    cursor = Cursor(reads, "m1", stored[0].id, reads.current_epoch("m1") or "")
    got = list(cursor.take(Batch(stored[2].id, tuple(stored[3:]))))  # a gap: 2nd and 3rd come first
    assert got == stored[1:]
    assert cursor.ended and cursor.done
    assert list(cursor.take(Batch(stored[3].id, tuple(stored[4:])))) == []


def test_cursor_of_a_deleted_message_is_gone(store, reads):
    """Catching up on a deleted message yields nothing and marks the cursor gone."""
    _create(store)
    cursor = Cursor(reads, "m1", START, reads.current_epoch("m1") or "")
    store.delete("m1")
    assert list(cursor.catch_up()) == []
    assert cursor.gone
