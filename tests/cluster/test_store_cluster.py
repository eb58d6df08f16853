"""The message store in Redis Cluster mode: the split scripts on a real 3-primary cluster plus a
control redis-server, and the repairs a crash between two halves needs."""

from __future__ import annotations

import threading
import time

import pytest

from shared import events as ev
from shared.broker import TaskMessages
from shared.keys import PENDING, RUNNING, message_keys, tenant_active, tenant_bytes, tenant_stored
from shared.records import Limits
from shared.store import CANCELLED, COMPLETED, PROCESSING, TOMBSTONE, Signal
from shared.store.cluster import leases_for
from shared.store.cluster_end_scripts import MessageFinishScript
from shared.store.cluster_ending import tenant_of
from shared.store.cluster_leases import ClusterLeases
from shared.streams.reads import StreamReads

pytestmark = [pytest.mark.integration]

REQUEST = {"model": "default", "messages": []}


@pytest.fixture
def store(bed):
    """A cluster-mode store on an emptied bed."""
    bed.control.flushdb()
    bed.topology.cluster_client().flushall()
    return bed.store()


def _claim(store, message_id, worker="w"):
    return store.claim(message_id, worker, owner=worker, lease_ms=10_000, max_resumes=3)


def test_message_keys_live_on_the_cluster_and_indexes_on_the_control_redis(bed, store):
    """Create → claim → append → finish: the message on the cluster, the indexes on the control
    Redis, the task pushed there, each index left once the message ended."""
    task = TaskMessages().generate("m1", "sluice.local", 0, "")
    assert store.create("m1", REQUEST, {"model": "default"}, task=task).outcome == "created"
    assert bed.control.llen(task.list_key) == 1
    assert not bed.control.exists(message_keys("m1").status)
    assert store.get_status("m1")["status"] == "pending"
    assert bed.control.zscore(PENDING, "m1") is not None
    assert bed.control.zscore(tenant_active("anonymous"), "m1") is not None

    claim = _claim(store, "m1")
    assert claim.outcome == "start" and claim.request == REQUEST
    assert bed.control.zscore(PENDING, "m1") is None and bed.control.zscore(RUNNING, "m1") is not None
    assert (
        store.append("m1", [ev.message_start("m1", "default", 1)], owner="w", lease_ms=5000) is Signal.GO_ON
    )
    assert store.finish("m1", COMPLETED, [ev.message_stop()], owner="w") == COMPLETED
    assert [e.type for e in StreamReads(store.messages).replay("m1")] == ["message_start", "message_stop"]
    assert bed.control.zscore(RUNNING, "m1") is None
    assert bed.control.zscore(tenant_active("anonymous"), "m1") is None
    assert store.finish("m1", CANCELLED, []) == COMPLETED


def test_existing_id_and_limits_are_refused_before_anything_is_written(bed, store):
    """A taken id, a full queue: nothing stored, nothing queued."""
    assert store.create("m1", REQUEST, {}).outcome == "created"
    assert store.create("m1", {"other": 1}, {}).outcome == "exists"
    assert store.get_request("m1") == REQUEST
    assert store.create("m2", REQUEST, {}, limits=Limits(max_queue_depth=1)).outcome == "overloaded"
    assert store.get_status("m2") is None and bed.control.zscore(PENDING, "m2") is None


def test_idempotent_repeat_gets_the_first_id_and_finishes_an_interrupted_create(bed, store):
    """A repeat with the same key gets the first id; if the first call stopped between its halves
    (admitted, message not written), the repeat writes it."""
    idem = ("key-digest", "body-digest")
    tenant = "t" * 32
    first = store.create(f"{tenant}/a", REQUEST, {}, tenant=tenant, idempotency=idem)
    assert first.outcome == "created"
    again = store.create(f"{tenant}/b", REQUEST, {}, tenant=tenant, idempotency=idem)
    assert (again.outcome, again.message_id) == ("idempotent", f"{tenant}/a")
    assert (
        store.create(f"{tenant}/c", REQUEST, {}, tenant=tenant, idempotency=(idem[0], "other")).outcome
        == "conflict"
    )

    idem2 = ("key-2", "body-2")
    original = store._write
    store._write = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("API died"))
    with pytest.raises(ConnectionError):
        store.create(f"{tenant}/d", REQUEST, {}, tenant=tenant, idempotency=idem2)
    store._write = original
    assert store.get_status(f"{tenant}/d") is None
    repeat = store.create(f"{tenant}/e", REQUEST, {}, tenant=tenant, idempotency=idem2)
    assert (repeat.outcome, repeat.message_id) == ("idempotent", f"{tenant}/d")
    assert store.get_status(f"{tenant}/d")["status"] == "pending"
    assert _claim(store, f"{tenant}/d").outcome == "start"


def test_claim_waits_for_a_message_not_written_yet(bed, store):
    """A claim that runs between the two halves of a create waits for the message half."""
    original = store._write
    gate = threading.Event()
    store._write = lambda *args: (gate.wait(10), original(*args))[1]
    creating = threading.Thread(target=store.create, args=("m1", REQUEST, {}))
    creating.start()
    deadline = time.monotonic() + 10
    while bed.control.zscore(PENDING, "m1") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.3, gate.set).start()
    assert _claim(store, "m1").outcome == "start"
    creating.join(10)


def test_claim_drops_a_create_that_never_finished(bed, store, monkeypatch):
    """Admitted, never written: the claim gives up and releases the tenant's reservation."""
    monkeypatch.setattr("shared.store.cluster.NOT_YET_SECONDS", 0.3)
    store._write = lambda *a, **k: None
    store.create("m1", REQUEST, {})
    assert bed.control.zscore(tenant_active("anonymous"), "m1") is not None
    assert _claim(store, "m1").outcome == "gone"
    assert bed.control.zscore(PENDING, "m1") is None
    assert bed.control.zscore(tenant_active("anonymous"), "m1") is None


def test_deleted_pending_message_is_gone_at_once_and_leaves_no_trace(bed, store):
    """Delete: a tombstone on the cluster, every index and quota entry released on the control."""
    tenant = "a" * 32
    sid = f"{tenant}/m1"
    limits = Limits(max_stored_bytes=10_000)
    assert (
        store.create(sid, REQUEST, {}, tenant=tenant, idempotency=("k", "b"), limits=limits).outcome
        == "created"
    )
    assert bed.control.zscore(tenant_stored(tenant), sid) is not None
    assert store.delete(sid)
    assert [e.data for e in StreamReads(store.messages).replay(sid)] == [TOMBSTONE]
    for key in (PENDING, tenant_active(tenant), tenant_stored(tenant)):
        assert bed.control.zscore(key, sid) is None
    assert int(bed.control.hget(tenant_bytes(tenant), "#total") or 0) == 0
    started = time.monotonic()
    assert _claim(store, sid).outcome == "gone"
    assert time.monotonic() - started < 5  # (no not-yet wait: the message is not admitted any more)
    assert not store.delete(sid)


def test_cancel_pending_and_processing(bed, store):
    """Cancel: a pending message ends at once; a processing one gets its flag on the cluster."""
    store.create("m1", REQUEST, {})
    assert store.cancel("m1") == CANCELLED
    assert bed.control.zscore(PENDING, "m1") is None
    store.create("m2", REQUEST, {})
    _claim(store, "m2")
    assert store.cancel("m2") == PROCESSING
    assert store.append("m2", [ev.text_delta(0, "x")], owner="w", lease_ms=5000) is Signal.CANCEL_ASKED


def test_reaper_requeues_lapsed_and_repairs_indexes(bed, store):
    """The reaper queues a lapsed run again, queues a claim cut short before its message half,
    and drops index entries whose message ended before its control half ran."""
    leases = leases_for(store, 0.2)
    assert isinstance(leases, ClusterLeases)
    store.create("lapsed", REQUEST, {"queue": "q", "band": 3})
    store.claim("lapsed", "w", owner="w", lease_ms=100, max_resumes=3)
    store.create("cut", REQUEST, {"queue": "q"})
    bed.control.zadd(RUNNING, {"cut": time.time() - 1})  # listed as running, never claimed
    store.create("ended", REQUEST, {})
    _claim(store, "ended")
    keys = message_keys("ended")
    finish = MessageFinishScript(  # the message half alone: the control half "crashed"
        status_key=keys.status,
        events_key=keys.events,
        request_key=keys.request,
        cancel_key=keys.cancel,
        lock_key=keys.lock,
        retention=60,
        maxlen=100,
        new_status=COMPLETED,
        now_iso="now",
        wake_channel=keys.wake,
    )
    store.message_scripts.run(finish)
    bed.control.zadd(RUNNING, {"ended": time.time() - 1})
    time.sleep(0.15)
    due = {item.message_id: item for item in leases.due_for_requeue()}
    assert set(due) == {"lapsed", "cut"} and due["lapsed"].band == 3
    assert bed.control.zscore(RUNNING, "ended") is None
    assert bed.control.zscore(tenant_active("anonymous"), "ended") is None
    assert leases.due_for_requeue() == []  # (each marked for the grace period)


def test_tenant_of_reverses_scoped_ids():
    """A storage id names its tenant; anonymous ids have none."""
    assert tenant_of("abc/msg_1") == "abc"
    assert tenant_of("msg_1") == "anonymous"
