"""The batch store: pipelined creation, a bounded feed window, results recorded once, cancel and expiry."""

from __future__ import annotations

import json

import pytest

from shared.batch_body import load_batch_body, parse_batch_json
from shared.batches import CANCELED, EXPIRED, BatchRequest, BatchStore
from shared.broker import TaskMessages
from shared.keys import BATCHES_ACTIVE, batch_keys, broker_list, message_keys
from shared.models import ModelRegistry, ModelSpec
from shared.outcomes import Outcomes
from shared.schemas import BodyInvalid
from shared.store import MessageStore
from shared.webhooks import WebhookStore

REGISTRY = ModelRegistry([ModelSpec(id="default", provider="scripted")])
QUEUE = "sluice.local"


def _requests(n: int) -> list[BatchRequest]:
    return [
        BatchRequest(
            f"r{i}", {"model": "default", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 5}
        )
        for i in range(n)
    ]


@pytest.fixture
def batches(store: MessageStore) -> BatchStore:
    return BatchStore(store.redis, window=4, head_requests=2)


def _finish(store: MessageStore, message_id: str, status: str) -> None:
    store.claim(message_id, "w", owner="o", lease_ms=1000, max_resumes=1)
    store.finish(message_id, status, [], {"error_message": "boom"} if status == "error" else None)


def test_creation_pauses_between_chunks_and_the_batch_appears_whole(store, batches):
    """2,500 requests are written in 3 pipelined chunks with a pause after each; the meta comes last."""
    pauses: list[int] = []
    batch_id = batches.create("anonymous", _requests(2500), pause=lambda: pauses.append(1))
    assert len(pauses) == 3
    meta = batches.get("anonymous", batch_id)
    assert meta is not None and meta["total"] == "2500" and meta["status"] == "in_progress"
    assert store.redis.llen(batch_keys(batch_id).requests) == 2500
    assert store.redis.zrange(BATCHES_ACTIVE, 0, -1) == [batch_id]


def test_feed_keeps_at_most_a_window_in_the_queue(store, batches):
    """Feeding twice puts exactly ``window`` messages in flight, each queued with its task."""
    batch_id = batches.create("anonymous", _requests(10))
    assert batches.feed(batch_id, store, TaskMessages(), REGISTRY).created == 4
    assert batches.feed(batch_id, store, TaskMessages(), REGISTRY).created == 0
    inflight = batches.inflight(batch_id)
    assert inflight == sorted(f"{batch_id}.r{i}" for i in range(4))
    assert 0 < store.redis.ttl(batch_keys(batch_id).inflight) <= store.redis.ttl(batch_keys(batch_id).meta)
    status = store.get_status(f"{batch_id}.r0")
    assert status is not None and status["batch_id"] == batch_id and status["custom_id"] == "r0"
    # The first two (the head) wait one band above the rest; both below the default band 5.
    assert store.redis.llen(broker_list(QUEUE, 6)) == 2 and store.redis.llen(broker_list(QUEUE, 8)) == 2


def test_results_are_recorded_once_and_the_last_one_ends_the_batch(store, batches):
    """Each end counts once however often it is reported; the results file lists every request in order."""
    outcomes = Outcomes(store, batches, WebhookStore(store.redis))
    batch_id = batches.create("anonymous", _requests(3))
    batches.feed(batch_id, store, TaskMessages(), REGISTRY)
    for i, status in enumerate(["completed", "error", "cancelled"]):
        _finish(store, f"{batch_id}.r{i}", status)
        outcomes.message_ended(f"{batch_id}.r{i}")
        outcomes.message_ended(f"{batch_id}.r{i}")
    meta = batches.get("anonymous", batch_id)
    assert meta is not None
    assert (meta["status"], meta["succeeded"], meta["errored"], meta["canceled"]) == ("ended", "1", "1", "1")
    lines = [
        json.loads(line)
        for chunk in batches.results("anonymous", batch_id, meta)
        for line in chunk.splitlines()
    ]
    assert [(x["custom_id"], x["result"]["type"]) for x in lines] == [
        ("r0", "succeeded"),
        ("r1", "errored"),
        ("r2", "canceled"),
    ]
    assert lines[1]["result"]["error"]["error"]["message"] == "boom"
    assert store.redis.zrange(BATCHES_ACTIVE, 0, -1) == []
    assert 0 < store.redis.ttl(batch_keys(batch_id).results) <= batches.retention_seconds


@pytest.mark.parametrize("ending", [CANCELED, EXPIRED])
def test_stop_counts_every_unfed_request_at_once(store, batches, ending):
    """Cancel (or expiry) of 1,000 requests counts the 996 unfed at once, hands back the 4 in flight."""
    batch_id = batches.create("anonymous", _requests(1000))
    batches.feed(batch_id, store, TaskMessages(), REGISTRY)
    stopped = batches.stop(batch_id, ending)
    assert stopped is not None
    inflight = stopped.inflight
    assert not stopped.ended and len(inflight) == 4
    meta = batches.get("anonymous", batch_id)
    assert meta is not None and meta[ending] == "996"
    assert batches.feed(batch_id, store, TaskMessages(), REGISTRY).created == 0
    outcomes = Outcomes(store, batches, WebhookStore(store.redis))
    for message_id in inflight:
        store.cancel(message_id)
        outcomes.message_ended(message_id)
    meta = batches.get("anonymous", batch_id)
    assert meta is not None and meta["status"] == "ended" and meta[ending] == "1000"
    kinds = {
        json.loads(line)["result"]["type"]
        for chunk in batches.results("anonymous", batch_id, meta)
        for line in chunk.splitlines()
    }
    assert kinds == {ending}


def test_a_bad_params_refuses_the_batch_with_its_location():
    """One invalid params refuses the whole batch; the error points into that request."""
    payload = {
        "requests": [
            {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}},
            {"custom_id": "b", "params": {"messages": [], "max_tokens": 5}},
            {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}], "stream": True}},
        ]
    }
    with pytest.raises(BodyInvalid) as info:
        load_batch_body(payload, REGISTRY, max_requests=10)
    locs = [d["loc"] for d in info.value.details]
    assert ["requests", 1, "params", "messages"] in locs
    assert ["requests", 2, "custom_id"] in locs
    assert ["requests", 2, "params", "stream"] in locs


def test_too_many_requests_are_refused():
    """More requests than SLUICE_BATCH_MAX_REQUESTS is a 400 on ``requests``."""
    item = {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}]}}
    with pytest.raises(BodyInvalid) as info:
        load_batch_body({"requests": [item] * 3}, REGISTRY, max_requests=2)
    assert info.value.details[0]["loc"] == ["requests"]


def test_message_status_keys_are_untouched_by_the_webhook_flag_without_endpoints(store, batches):
    """A tenant without endpoints costs one HLEN: nothing is written to the message's status."""
    outcomes = Outcomes(store, batches, WebhookStore(store.redis))
    batch_id = batches.create("anonymous", _requests(1))
    batches.feed(batch_id, store, TaskMessages(), REGISTRY)
    _finish(store, f"{batch_id}.r0", "completed")
    outcomes.message_ended(f"{batch_id}.r0")
    assert "webhooks_emitted" not in store.redis.hgetall(message_keys(f"{batch_id}.r0").status)


def test_a_tenants_batches_share_its_window_and_max_inflight_caps_all(store):
    """Two batches of one tenant get half the window each; a global cap bounds every batch together."""
    shared = BatchStore(store.redis, window=4, max_inflight=0)
    first, second = shared.create("anonymous", _requests(10)), shared.create("anonymous", _requests(10))
    assert shared.feed(first, store, TaskMessages(), REGISTRY).created == 2
    assert shared.feed(second, store, TaskMessages(), REGISTRY).created == 2
    capped = BatchStore(store.redis, window=4, max_inflight=5)
    other = capped.create("t" * 32, _requests(10))
    assert capped.feed(f"{'t' * 32}/{other}", store, TaskMessages(), REGISTRY).created == 1


def test_the_create_body_is_decoded_a_chunk_at_a_time():
    """``{"requests": [...]}`` is decoded item by item with a pause per chunk, equal to json.loads."""
    body = {"requests": [{"custom_id": f"r{i}", "params": {"a": [i, {"b": "]},"}]}} for i in range(1200)]}
    text = json.dumps(body, indent=1)
    pauses: list[int] = []
    assert parse_batch_json(text, lambda: pauses.append(1)) == body
    assert len(pauses) == 2
    assert parse_batch_json(' { "requests" : [ ] } ') == {"requests": []}


@pytest.mark.parametrize(
    "text",
    ['{"requests": [1, 2], "extra": 1}', '{"other": 1, "requests": []}', "[1]", '{"requests": 5}'],
)
def test_other_shapes_are_decoded_whole(text):
    """Anything but a plain ``{"requests": [...]}`` goes through json.loads (and is refused later)."""
    assert parse_batch_json(text) == json.loads(text)


@pytest.mark.parametrize(
    "text", ['{"requests": [1, 2', '{"requests": [1 2]}', '{"requests": [1]', '{"requests": [{]}']
)
def test_malformed_bodies_raise_value_error(text):
    """Malformed JSON raises ValueError, as json.loads does (the view answers 400)."""
    with pytest.raises(ValueError):
        parse_batch_json(text)


def test_the_feeders_sweep_records_ends_nobody_recorded(store):
    """A message that ended without its hook, and one deleted while running, are recorded by the sweep."""
    from shared.settings import Settings
    from workers.feeder import Feeder

    batches = BatchStore(store.redis, window=2, head_requests=0)
    outcomes = Outcomes(store, batches, WebhookStore(store.redis))
    feeder = Feeder(outcomes, REGISTRY, TaskMessages(), Settings(), "test")
    batch_id = batches.create("anonymous", _requests(3))
    feeder.visit(batch_id)
    _finish(store, f"{batch_id}.r0", "completed")
    store.delete(f"{batch_id}.r1")
    feeder.visit(batch_id)  # records both, then feeds the third
    meta = batches.get("anonymous", batch_id)
    assert meta is not None and (meta["succeeded"], meta["errored"], meta["fed"]) == ("1", "1", "3")
    assert batches.inflight(batch_id) == [f"{batch_id}.r2"]
