"""The batch scripts and the feeder's lease as named-argument wrappers with typed results."""

from __future__ import annotations

import json
import re

import pytest

from shared.batch_results import CANCELED, EXPIRED, SUCCEEDED
from shared.batch_scripts import Advance, AdvanceScript, Recorded, RecordScript, Stopped, StopScript
from shared.batches import BatchRequest, BatchStore
from shared.broker import TaskMessages
from shared.keys import BATCHES_ACTIVE, FEEDER_LEADER, batch_keys
from shared.models import ModelRegistry, ModelSpec
from shared.outcomes import Outcomes
from shared.settings import Settings
from shared.store import MessageStore, Status
from shared.store.script import ScriptCall
from shared.webhooks import WebhookStore
from workers.feeder import Feeder, Lead, LeadScript

REGISTRY = ModelRegistry([ModelSpec(id="default", provider="scripted")])
LINE = json.dumps({"type": SUCCEEDED})


def _requests(n: int) -> list[BatchRequest]:
    params = {"model": "default", "messages": [{"role": "user", "content": "q"}], "max_tokens": 5}
    return [BatchRequest(f"r{i}", params) for i in range(n)]


@pytest.fixture
def batches(store: MessageStore) -> BatchStore:
    return BatchStore(store.redis, window=2, head_requests=0, retention_seconds=120)


def _fed(store: MessageStore, batches: BatchStore, n: int) -> str:
    """A batch of ``n`` requests, its first window fed."""
    batch_id = batches.create("anonymous", _requests(n))
    batches.feed(batch_id, store, TaskMessages(), REGISTRY)
    return batch_id


@pytest.mark.parametrize("script", [RecordScript, StopScript, AdvanceScript, LeadScript])
def test_batch_script_lua_uses_names_only(script: type[ScriptCall]):
    """Neither the body nor the shared prelude indexes KEYS or ARGV by number."""
    for lua in (script.BODY, script.PRELUDE):
        assert not re.search(r"\b(KEYS|ARGV)\[\d", lua)
        assert not re.search(r"\bKEYS\b", lua)
    assert "= KEYS[1]" in script.header()


def test_ending_scripts_send_every_batch_key_once_then_their_arguments_in_order():
    """A script that may end a batch gets each of its keys and the active set; args in field order."""
    call = RecordScript(
        **RecordScript.batch("t/b1"),
        now="N",
        retention=60,
        message_sid="t/b1.r0",
        index=3,
        kind=CANCELED,
        line="L",
        expired_line="X",
    )
    keys = batch_keys("t/b1")
    expected = [keys.meta, keys.results, keys.inflight, BATCHES_ACTIVE, keys.requests, keys.custom_ids]
    assert call.keys() == expected
    assert set(keys.all()) <= set(call.keys())
    assert call.args() == ["N", 60, "t/b1", "t/b1.r0", 3, CANCELED, "L", "X"]
    header = RecordScript.header().splitlines()
    assert "local retention = tonumber(ARGV[2])" in header and "local index = tonumber(ARGV[5])" in header
    assert "end_if_done" in StopScript.PRELUDE and StopScript.PRELUDE == RecordScript.PRELUDE


def test_record_answers_recorded_already_or_ended(store, batches):
    """Each end counts once; the last one ends the batch, which leaves the active set and expires."""
    batch_id = _fed(store, batches, 2)
    first, second = f"{batch_id}.r0", f"{batch_id}.r1"
    assert batches.record(batch_id, first, 0, SUCCEEDED, LINE) is Recorded.RECORDED
    assert batches.record(batch_id, first, 0, SUCCEEDED, LINE) is Recorded.ALREADY
    assert batches.record(batch_id, f"{batch_id}.r9", 9, SUCCEEDED, LINE) is Recorded.ALREADY
    assert batches.record(batch_id, second, 1, SUCCEEDED, LINE) is Recorded.ENDED
    assert batches.record(batch_id, second, 1, SUCCEEDED, LINE) is Recorded.ALREADY
    meta = batches.get("anonymous", batch_id)
    assert meta is not None and (meta["status"], meta["succeeded"], meta["done"]) == ("ended", "2", "2")
    assert meta["ended_at"]
    assert store.redis.zrange(BATCHES_ACTIVE, 0, -1) == []
    for batch_key in batch_keys(batch_id).all():
        # gone (the empty in-flight set) or expiring with the retention
        assert store.redis.ttl(batch_key) in (-2, *range(1, 121))


def test_a_cancel_recorded_in_an_expiring_batch_counts_as_expired(store, batches):
    """After expiry stopped the feed, an in-flight message's cancel is recorded as ``expired``."""
    batch_id = _fed(store, batches, 3)
    stopped = batches.stop(batch_id, EXPIRED)
    assert stopped is not None and not stopped.ended and stopped.status == "in_progress"
    assert batches.record(batch_id, f"{batch_id}.r0", 0, CANCELED, "{}") is Recorded.RECORDED
    meta = batches.get("anonymous", batch_id)
    assert meta is not None and (meta[EXPIRED], meta[CANCELED]) == ("2", "0")
    assert json.loads(store.redis.hget(batch_keys(batch_id).results, "0")) == {"type": EXPIRED}
    assert batches.record(batch_id, f"{batch_id}.r1", 1, CANCELED, "{}") is Recorded.ENDED


def test_stop_answers_the_inflight_messages_the_end_or_none(store, batches):
    """A running batch stops with its window in flight; one with nothing in flight ends at once;
    a batch already stopped or ended answers None."""
    running = _fed(store, batches, 5)
    stopped = batches.stop(running, CANCELED)
    assert stopped == Stopped("canceling", tuple(batches.inflight(running)))
    assert not stopped.ended and len(stopped.inflight) == 2
    assert batches.stop(running, CANCELED) is None
    unfed = batches.create("anonymous", _requests(3))
    at_once = batches.stop(unfed, CANCELED)
    assert at_once == Stopped("ended", ()) and at_once.ended
    meta = batches.get("anonymous", unfed)
    assert meta is not None and (meta["status"], meta[CANCELED]) == ("ended", "3")
    assert meta["cancel_initiated_at"]
    assert batches.stop(unfed, EXPIRED) is None


def _advance(batches: BatchStore, batch_id: str, expected: int, new: int, *sids: str) -> Advance:
    keys = batch_keys(batch_id)
    call = AdvanceScript(
        meta_key=keys.meta, inflight_key=keys.inflight, expected_fed=expected, new_fed=new, message_sids=sids
    )
    return batches.scripts.run(call)


def test_advance_answers_advanced_overtaken_or_stopped(store, batches):
    """The cursor moves only from where the caller read it, and only while the batch runs."""
    batch_id = batches.create("anonymous", _requests(4))
    assert _advance(batches, batch_id, 0, 2, "a", "b") is Advance.ADVANCED
    keys = batch_keys(batch_id)
    assert store.redis.smembers(keys.inflight) == {"a", "b"} and store.redis.hget(keys.meta, "fed") == "2"
    assert 0 < store.redis.ttl(keys.inflight) <= store.redis.ttl(keys.meta)
    assert _advance(batches, batch_id, 0, 2, "a", "b") is Advance.OVERTAKEN
    assert _advance(batches, batch_id, 2, 3) is Advance.ADVANCED
    assert store.redis.hget(keys.meta, "fed") == "3" and store.redis.scard(keys.inflight) == 2
    batches.stop(batch_id, CANCELED)
    assert _advance(batches, batch_id, 4, 4, "c") is Advance.STOPPED
    assert not store.redis.sismember(keys.inflight, "c")


@pytest.mark.parametrize("race", [Advance.STOPPED, Advance.OVERTAKEN])
def test_a_feed_that_loses_its_advance_cancels_only_for_a_stopped_batch(store, batches, monkeypatch, race):
    """Stopped meanwhile: the messages the feed created are cancelled (nobody counts them).
    Overtaken: another feed counted the same messages, which stay queued."""
    batch_id = batches.create("anonymous", _requests(4))
    run = batches.scripts.run

    def interfere(call, client=None):
        if isinstance(call, AdvanceScript):
            if race is Advance.STOPPED:
                batches.stop(batch_id, CANCELED)
            else:
                run(call)
        return run(call, client)

    monkeypatch.setattr(batches.scripts, "run", interfere)
    assert batches.feed(batch_id, store, TaskMessages(), REGISTRY).created == 0
    statuses = {store.get_field(f"{batch_id}.r{i}", "status") for i in range(2)}
    assert statuses == ({Status.CANCELLED} if race is Advance.STOPPED else {Status.PENDING})


def test_the_feeder_lease_is_taken_renewed_or_held_by_another(store):
    """The first worker takes the lease and renews it; another waits until it lapses."""

    def lead(identity: str) -> Lead:
        return store.scripts.run(LeadScript(leader_key=FEEDER_LEADER, identity=identity, lease_ms=5000))

    assert lead("a") is Lead.TAKEN
    assert lead("a") is Lead.RENEWED
    assert lead("b") is Lead.OTHER
    assert 0 < store.redis.pttl(FEEDER_LEADER) <= 5000 and store.redis.get(FEEDER_LEADER) == "a"
    store.redis.delete(FEEDER_LEADER)
    assert lead("b") is Lead.TAKEN


def test_only_the_leader_feeds(store, batches):
    """A worker whose tick finds another leader feeds nothing."""
    outcomes = Outcomes(store, batches, WebhookStore(store.redis))
    leader, other = (Feeder(outcomes, REGISTRY, TaskMessages(), Settings(), name) for name in ("a", "b"))
    first = batches.create("anonymous", _requests(3))
    leader.tick()
    assert len(batches.inflight(first)) == 2
    second = batches.create("anonymous", _requests(3))
    other.tick()
    assert batches.inflight(second) == []
    leader.tick()
    assert len(batches.inflight(second)) == 1  # the tenant's window of 2, shared by its two batches
