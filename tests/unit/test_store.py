"""The store's contract, on fakeredis and on a real redis-server."""

import pytest

from shared import events as ev
from shared.keys import message_keys, tenant_bytes, tenant_stored
from shared.store import (
    CANCELLED,
    COMPLETED,
    PENDING,
    PROCESSING,
    TOMBSTONE,
    TOMBSTONE_TTL_MS,
    Limits,
    Signal,
)
from shared.streams.contract import StreamGone
from shared.streams.reads import StreamReads


def _create(store, message_id="m1"):
    admission = store.create(message_id, {"model": "default", "messages": []}, {"model": "default"})
    assert admission.outcome == "created"


def _claim(store, message_id, worker):
    return store.claim(message_id, worker, owner=worker, lease_ms=10_000, max_resumes=3).outcome


def test_create_refuses_an_existing_id(store):
    """A second create with the same id changes nothing."""
    _create(store)
    assert store.create("m1", {"other": 1}, {"model": "x"}).outcome == "exists"
    assert store.get_request("m1") == {"model": "default", "messages": []}
    assert store.get_status("m1")["status"] == PENDING


def test_claim_moves_pending_to_processing_once(store):
    """Only the first claim wins; the second sees processing."""
    _create(store)
    assert _claim(store, "m1", "w1") == "start"
    assert _claim(store, "m1", "w2") == "locked"
    status = store.get_status("m1")
    assert status["status"] == PROCESSING and status["worker"] == "w1"


def test_append_requires_processing_and_reports_cancel(store):
    """Appends are refused before the claim; a cancel flag is reported to the writer."""
    _create(store)
    assert store.append("m1", [ev.message_start("m1", "d", 1)]) is Signal.GONE
    _claim(store, "m1", "w")
    assert store.append("m1", [ev.message_start("m1", "d", 1)], {"input_tokens": 1}) is Signal.GO_ON
    assert store.cancel("m1") == PROCESSING
    assert store.append("m1", [ev.text_delta(0, "x")]) is Signal.CANCEL_ASKED
    assert store.get_field("m1", "input_tokens") == "1"


def test_finish_is_terminal_and_never_changes(store):
    """After completed, neither cancel nor another finish changes anything."""
    _create(store)
    _claim(store, "m1", "w")
    assert store.finish("m1", COMPLETED, [ev.message_stop()]) == COMPLETED
    assert store.finish("m1", CANCELLED, [ev.message_stop()]) == COMPLETED
    assert store.cancel("m1") == COMPLETED
    events = StreamReads(store.redis).replay("m1")
    assert [e.type for e in events] == ["message_stop"]
    assert store.get_status("m1")["event_count"] == "1"


def test_cancel_pending_writes_a_well_formed_cancelled_stream(store):
    """A pending message cancelled ends at once with start, cancelled delta and stop."""
    _create(store)
    assert store.cancel("m1") == CANCELLED
    types = [e.type for e in StreamReads(store.redis).replay("m1")]
    assert types == ["message_start", "message_delta", "message_stop"]
    assert _claim(store, "m1", "w") == CANCELLED


def test_delete_removes_every_key(store):
    """After delete, nothing of the message is readable."""
    _create(store)
    _claim(store, "m1", "w")
    store.append("m1", [ev.message_start("m1", "d", 1)])
    assert store.delete("m1")
    assert store.get_status("m1") is None and store.get_request("m1") is None
    with pytest.raises(StreamGone):
        StreamReads(store.redis).read_after("m1", "0-0", epoch="")
    # What is left is the tombstone that wakes the tails, for a few seconds.
    assert [item.data for item in StreamReads(store.redis).replay("m1")] == [TOMBSTONE]
    assert 0 < store.redis.pttl(message_keys("m1").events) <= TOMBSTONE_TTL_MS
    assert not store.delete("m1")
    assert store.append("m1", [ev.text_delta(0, "x")]) is Signal.GONE


def test_every_key_has_a_ttl_and_finish_sets_retention(store):
    """Keys carry a TTL from their first write, and the retention TTL at the end."""
    _create(store)
    _claim(store, "m1", "w")
    store.append("m1", [ev.message_start("m1", "d", 1)])
    ttls = store.ttls("m1")
    assert ttls and all(ttl > 0 for ttl in ttls.values())
    store.finish("m1", COMPLETED, [ev.message_stop()])
    ttls = store.ttls("m1")
    keys = message_keys("m1")
    assert set(ttls) == {keys.status, keys.request, keys.events}
    assert all(0 < ttl <= 60 for ttl in ttls.values())


def test_live_workers_follow_heartbeats(store):
    """A heartbeat makes a worker live; leaving removes it."""
    store.worker_heartbeat("w1@host")
    assert store.live_workers() == ["w1@host"]
    store.worker_gone("w1@host")
    assert store.live_workers() == []


def test_a_claim_that_runs_brings_the_status_and_the_request(store):
    """The worker needs no second round trip: the claim answers with both, as they are after it."""
    _create(store)
    claim = store.claim("m1", "w1", owner="w1", lease_ms=10_000, max_resumes=3)
    assert claim.runs and claim.request == {"model": "default", "messages": []}
    assert claim.status["status"] == PROCESSING and claim.status["worker"] == "w1"
    refused = store.claim("m1", "w2", owner="w2", lease_ms=10_000, max_resumes=3)
    assert (refused.outcome, refused.status, refused.request, refused.runs) == ("locked", {}, None, False)


def test_stored_bytes_count_until_delete_and_their_keys_expire_with_the_last_message(store):
    """The quota counts request bytes per tenant; a delete gives them back; once every message
    ended, the tenant's bookkeeping keys expire with the retention of the last one."""
    limits = Limits(max_stored_bytes=1000)
    body = {"text": "x" * 300}
    assert store.create("t/a", body, {"model": "x"}, tenant="t", limits=limits).outcome == "created"
    assert store.create("t/b", body, {"model": "x"}, tenant="t", limits=limits).outcome == "created"
    assert store.create("t/c", body, {"model": "x"}, tenant="t", limits=limits).outcome == "created"
    assert store.create("t/d", body, {"model": "x"}, tenant="t", limits=limits).outcome == "quota"
    assert store.create("u/d", body, {"model": "x"}, tenant="u", limits=limits).outcome == "created"
    assert store.delete("t/a")
    assert store.create("t/d", body, {"model": "x"}, tenant="t", limits=limits).outcome == "created"
    for sid in ("t/b", "t/c", "t/d"):
        store.finish(sid, CANCELLED, [], expected=PENDING)
    for key in (tenant_stored("t"), tenant_bytes("t")):
        assert 0 < store.redis.ttl(key) <= store.retention_seconds + 2
