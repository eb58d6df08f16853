"""The whole stack with its message store on a Redis Cluster (3 primaries, 3 replicas): a real
gunicorn API and a real Celery worker, SLUICE_STORE_CLUSTER_NODES set."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from shared.keys import PENDING, RUNNING, message_keys, scoped_id
from tests.integration.helpers import check_grammar, observe, text_of
from tests.reliability.helpers import Watcher, chat, post, script_text, status_of, wait_until
from tests.reliability.test_stream_edges import RawObserver

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def running(bed):
    """One worker and one API process over the module's bed."""
    bed.worker("w1", concurrency=2)
    api = bed.start_api()
    bed.stack.wait_ready(api, timeout=120)
    return bed, api


def test_submit_stream_complete_with_every_key_on_the_cluster(running):
    """Submit → stream → completed; the message's keys are on the cluster, not the control Redis,
    and it leaves every control index."""
    bed, api = running
    message_id = post(api, chat(max_tokens=12)).json()["message_id"]
    frames = observe(api, message_id)
    check_grammar(frames)
    assert text_of(frames) == script_text(12)
    assert status_of(api, message_id)["status"] == "completed"
    keys = message_keys(message_id)
    cluster = bed.topology.cluster_client()
    assert cluster.exists(keys.status, keys.request, keys.events) == 3
    assert bed.control.exists(keys.status, keys.request, keys.events) == 0
    assert bed.control.zscore(PENDING, message_id) is None and bed.control.zscore(RUNNING, message_id) is None


def test_observers_resume_with_last_event_id(running):
    """An observer that reconnects with Last-Event-ID gets exactly the rest; many observers of
    many streams on one API process (streams of different slots, one reader) all finish."""
    _, api = running
    ids = [post(api, chat(max_tokens=30)).json()["message_id"] for _ in range(6)]
    watchers = [Watcher([api], message_id) for message_id in ids for _ in range(2)]
    first = observe(api, ids[0])
    cut = first[len(first) // 2]
    rest = observe(api, ids[0], headers={"Last-Event-ID": cut.id})
    assert [f.id for f in rest] == [f.id for f in first[len(first) // 2 + 1 :]]
    for watcher in watchers:
        frames = watcher.wait(120)
        check_grammar(frames)
        assert text_of(frames) == script_text(30)


def test_cancel_running_and_delete_ends_observers(running):
    """Cancel ends a running message well-formed; a delete ends every observer with not_found."""
    _, api = running
    cancelled = post(api, chat(max_tokens=2000)).json()["message_id"]
    watcher = Watcher([api], cancelled)
    wait_until(lambda: sum(f.event == "content_block_delta" for f in watcher.frames) >= 3, 60, "deltas")
    answer = httpx.post(f"{api}/v1/messages/async/{cancelled}/cancel", timeout=30)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    frames = watcher.wait(60)
    check_grammar(frames)

    deleted = post(api, chat(max_tokens=2000)).json()["message_id"]
    observers = [RawObserver(api, deleted) for _ in range(2)]
    wait_until(lambda: all(o.deltas() >= 3 for o in observers), 60, "deltas at every observer")
    assert httpx.delete(f"{api}/v1/messages/async/{deleted}", timeout=10).status_code == 200
    for observer in observers:
        assert observer.done.wait(20), "observer still attached after delete"
        assert observer.frames[-1].event == "error"
        assert observer.frames[-1].data["error"]["type"] == "not_found_error"
    assert httpx.get(f"{api}/v1/messages/async/{deleted}/stream", timeout=10).status_code == 404


def test_idempotent_submit_returns_the_first_message(running):
    """The same Idempotency-Key and body: the first message's id, one message run."""
    bed, api = running
    headers = {"Idempotency-Key": f"cluster-{time.time()}"}
    first = post(api, chat(max_tokens=5, model="fast"), headers=headers)
    again = post(api, chat(max_tokens=5, model="fast"), headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["message_id"] == again.json()["message_id"]
    conflict = post(api, chat(max_tokens=6, model="fast"), headers=headers)
    assert conflict.status_code == 409
    message_id = first.json()["message_id"]
    wait_until(lambda: status_of(api, message_id)["status"] == "completed", 60, "completed")
    starts = [f for f in observe(api, message_id) if f.event == "message_start"]
    assert len(starts) == 1
    assert bed.topology.cluster_client().exists(message_keys(scoped_id("anonymous", message_id)).status)


def test_message_batch_runs_with_its_messages_on_the_cluster(running):
    """A Message Batch: its requests run as messages on the cluster, the feeder sees them end,
    every result is recorded and the requests page shows each message's status."""
    bed, api = running
    requests = [{"custom_id": f"r{i}", "params": chat(max_tokens=25)} for i in range(4)]
    created = httpx.post(f"{api}/v1/messages/batches", json={"requests": requests}, timeout=10)
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]

    def running_shown() -> bool:
        page = httpx.get(f"{api}/v1/messages/batches/{batch_id}/requests", timeout=10).json()["data"]
        return any(item["status"] == "processing" for item in page)

    wait_until(running_shown, 60, "a request shown processing (its status read on the cluster)")

    def ended() -> dict | None:
        batch = httpx.get(f"{api}/v1/messages/batches/{batch_id}", timeout=10).json()
        return batch if batch["processing_status"] == "ended" else None

    batch = wait_until(ended, 120, "the batch to end", 0.2)
    assert batch["request_counts"]["succeeded"] == 4, batch
    lines = httpx.get(f"{api}/v1/messages/batches/{batch_id}/results", timeout=10).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["r0", "r1", "r2", "r3"]
    assert all(json.loads(line)["result"]["type"] == "succeeded" for line in lines)
    assert bed.topology.cluster_client().exists(message_keys(f"{batch_id}.r0").status)
