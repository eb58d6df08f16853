"""Locks, leases, resume and admission on the store contract (fakeredis and a real redis-server)."""

from __future__ import annotations

import time

from api.auth import digest, key_digests
from shared import events as ev
from shared.keys import message_keys
from shared.leases import Leases
from shared.records import StoredEvent
from shared.settings import Settings
from shared.store import Limits, Signal
from tests.unit.test_generation import REQUEST, ListSink, provider
from workers.generation import resume_generation
from workers.providers.base import Resume
from workers.resume import resume_state

BODY = {"model": "default", "messages": []}


def _create(store, message_id="m1", **kwargs):
    return store.create(message_id, BODY, {"model": "default", "queue": "q", "band": 3}, **kwargs)


def _claim(store, owner, lease_ms=10_000, max_resumes=2):
    return store.claim("m1", owner, owner=owner, lease_ms=lease_ms, max_resumes=max_resumes).outcome


def test_lapsed_lock_lets_another_worker_resume_and_fences_the_old_one(store):
    """Once the first owner's lease lapses a second claim resumes, and the first can no longer write."""
    _create(store)
    assert _claim(store, "a", lease_ms=1) == "start"
    time.sleep(0.01)  # the 1 ms lease lapses
    assert _claim(store, "b") == "resume"
    assert store.append("m1", [ev.text_delta(0, "x")], owner="a", lease_ms=1000) is Signal.GONE
    assert store.append("m1", [ev.text_delta(0, "x")], owner="b", lease_ms=1000) is Signal.GO_ON
    assert store.finish("m1", "completed", [ev.message_stop()], owner="a") == "processing"
    assert store.finish("m1", "completed", [ev.message_stop()], owner="b") == "completed"


def test_a_held_lock_is_not_taken_and_resumes_are_counted(store):
    """A live lease answers locked; past max_resumes the claim answers exhausted."""
    _create(store)
    assert _claim(store, "a") == "start"
    assert _claim(store, "b") == "locked"
    for owner, expected in (("b", "resume"), ("c", "resume"), ("d", "exhausted")):
        store.redis.delete(message_keys("m1").lock)
        assert _claim(store, owner) == expected


def test_reaper_requeues_only_lapsed_processing_messages(store):
    """A lapsed lease is due once (then left alone for the grace time); a live one is not due."""
    _create(store)
    _create(store, "m2")
    leases = Leases(store.redis, 10)
    _claim(store, "a", lease_ms=1)
    store.claim("m2", "b", owner="b", lease_ms=10_000, max_resumes=2)
    time.sleep(0.01)
    due = leases.due_for_requeue()
    assert [(d.message_id, d.queue, d.band) for d in due] == [("m1", "q", 3)]
    assert leases.due_for_requeue() == []
    assert leases.renew("m2", "b") and not leases.renew("m2", "a")


def test_idempotent_create_returns_the_first_id_and_detects_conflicts(store):
    """Same key and body: the first id, nothing new; same key, other body: conflict."""
    assert _create(store, "m1", idempotency=("k", "body1")).outcome == "created"
    again = _create(store, "m2", idempotency=("k", "body1"))
    assert (again.outcome, again.message_id) == ("idempotent", "m1")
    assert _create(store, "m3", idempotency=("k", "body2")).outcome == "conflict"
    assert store.get_status("m2") is None and store.get_status("m3") is None


def test_queue_depth_and_concurrency_limits_refuse_without_storing(store):
    """Over the pending count or the tenant's in-flight count, create stores nothing."""
    assert _create(store, "m1", limits=Limits(max_queue_depth=1)).outcome == "created"
    assert _create(store, "m2", limits=Limits(max_queue_depth=1)).outcome == "overloaded"
    assert _create(store, "m3", tenant="t", limits=Limits(max_concurrent=1)).outcome == "created"
    assert _create(store, "m4", tenant="t", limits=Limits(max_concurrent=1)).outcome == "busy"
    assert store.get_status("m2") is None and store.get_status("m4") is None
    store.finish("m3", "cancelled", [], expected="pending")
    assert _create(store, "m5", tenant="t", limits=Limits(max_concurrent=1)).outcome == "created"


def _stored(events):
    return [StoredEvent(f"{i}-0", e["type"], ev.encode(e)) for i, e in enumerate(events, 1)]


def test_resume_state_rebuilds_text_and_open_block():
    """The text so far and the open text block come back from the stored events."""
    events = [ev.message_start("m", "d", 1), ev.content_block_start(0, ev.text_block())]
    events += [ev.text_delta(0, "Hello "), ev.text_delta(0, "world")]
    state = resume_state(_stored(events))
    assert (state.started, state.text, state.index, state.open_kind, state.resumable) == (
        True,
        "Hello world",
        0,
        "text",
        True,
    )
    assert not resume_state([]).started


def test_resume_state_refuses_tool_blocks():
    """A stream in the middle of a tool_use block cannot be resumed faithfully."""
    events = [ev.message_start("m", "d", 1), ev.content_block_start(0, ev.tool_use_block("t", "f"))]
    assert not resume_state(_stored(events)).resumable


def test_resumed_generation_continues_without_a_second_message_start():
    """A resumed run writes only the rest of the text into the open block, then the ending."""
    sink = ListSink()
    scripted = provider(text="a b c d e", repeat=False)
    outcome = resume_generation(
        "m", REQUEST, scripted, sink, max_tokens=10, resume=Resume("a b ", 2), open_index=0, text_open=True
    )
    assert outcome.status == "completed"
    assert sink.events[0]["type"] == "content_block_delta"
    assert "message_start" not in [e["type"] for e in sink.events]
    assert "".join(e["delta"]["text"] for e in sink.events if e["type"] == "content_block_delta") == "c d e"
    assert sink.events[-2]["usage"]["output_tokens"] == 5


def test_rate_limit_refuses_past_the_burst_with_a_retry_after(store):
    """Three per minute: the fourth create of a tenant is refused with a wait and stores nothing."""
    rate = Limits(rate_per_minute=3)
    for i in range(3):
        assert _create(store, f"m{i}", tenant="t", limits=rate).outcome == "created"
    refused = _create(store, "m3", tenant="t", limits=rate)
    assert refused.outcome == "limited"
    assert 0 < refused.retry_after <= 20
    assert store.get_status("m3") is None
    assert _create(store, "m4", tenant="other", limits=rate).outcome == "created"


def test_keys_come_from_the_variable_and_the_file_as_digests(tmp_path):
    """Keys are read from both sources, comments and blanks skipped, and kept only as digests."""
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\n\nfile-key\n")
    digests = key_digests(Settings(api_keys="a, b", api_keys_file=str(keys_file)))
    assert digests == tuple(sorted(digest(k) for k in ("a", "b", "file-key")))
    assert "a-secret" not in repr(Settings(api_keys="a-secret"))
