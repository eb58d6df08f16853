"""Message Batches through the official Anthropic SDK against a real stack (API, Redis, worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from deploy.probes import wait_for
from shared.keys import broker_list
from tests.integration.helpers import status
from tests.integration.stacks import ScriptedStack, hostname, scripted_stack, wait_workers

pytestmark = pytest.mark.integration

WINDOW = 3


@pytest.fixture(scope="module")
def batch_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedStack]:
    """Scripted models, a prefork worker (concurrency 2) on the local queue, a small feed window."""
    running = scripted_stack(
        tmp_path_factory.mktemp("batches"),
        SLUICE_BATCH_WINDOW=str(WINDOW),
        SLUICE_BATCH_FEED_INTERVAL_SECONDS="0.1",
    )
    name = hostname("batch")
    running.stack.start_worker(name, queues="sluice.local", concurrency=2, pool="prefork")
    wait_workers(running.api, [name])
    yield running
    running.stop()


@pytest.fixture
def client(batch_stack: ScriptedStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="unused", base_url=batch_stack.api, max_retries=0)


def _request(custom_id: str, model: str = "quick", **params: object) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": model,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            **params,
        },
    }


def _wait_ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.1)
    raise TimeoutError(f"batch {batch_id} did not end")


def test_sdk_create_retrieve_results_list_delete(client, batch_stack):
    """The SDK's batch calls work unchanged: every request succeeds and its message can be looked up."""
    created = client.messages.batches.create(requests=[_request(f"req-{i}") for i in range(7)])  # type: ignore[list-item]
    assert created.id.startswith("msgbatch_") and created.processing_status == "in_progress"
    assert created.request_counts.processing == 7 and created.results_url is None
    ended = _wait_ended(client, created.id)
    assert ended.request_counts.succeeded == 7 and ended.request_counts.processing == 0  # type: ignore[attr-defined]
    assert ended.results_url == f"{batch_stack.api}/v1/messages/batches/{created.id}/results"  # type: ignore[attr-defined]
    results = list(client.messages.batches.results(created.id))
    assert sorted(r.custom_id for r in results) == sorted(f"req-{i}" for i in range(7))
    for result in results:
        assert result.result.type == "succeeded"
        assert "".join(b.text for b in result.result.message.content if b.type == "text") == "one two three"  # type: ignore[union-attr]
    meta = status(batch_stack.api, f"{created.id}.req-3")["metadata"]
    assert (meta["batch_id"], meta["custom_id"]) == (created.id, "req-3")
    listed = client.messages.batches.list(limit=50)
    assert created.id in [b.id for b in listed.data]
    deleted = client.messages.batches.delete(created.id)
    assert deleted.id == created.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


def test_one_invalid_params_refuses_the_batch_and_stores_nothing(client, batch_stack):
    """A bad request is a 400 located at ["requests", i, "params", ...]; no batch appears."""
    before = [b.id for b in client.messages.batches.list(limit=1000).data]
    bad = _request("b")
    bad["params"] = {"model": "quick", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(
        f"{batch_stack.api}/v1/messages/batches", json={"requests": [_request("a"), bad]}, timeout=10
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["loc"] == ["requests", 1, "params", "max_tokens"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=[_request("same"), _request("same")])  # type: ignore[list-item]
    assert [b.id for b in client.messages.batches.list(limit=1000).data] == before


def test_the_queue_holds_at_most_a_window_and_cancel_ends_a_big_batch_quickly(client, batch_stack):
    """500 endless requests keep <= window queued or running; cancel ends the batch in seconds."""
    created = client.messages.batches.create(
        requests=[_request(f"r{i}", model="blocker", max_tokens=100000) for i in range(500)]  # type: ignore[list-item]
    )

    def waiting() -> int:
        return sum(batch_stack.redis.llen(broker_list("sluice.local", band)) for band in range(10))

    wait_for(
        lambda: batch_stack.redis.scard(f"sluice:batch:{{{created.id}}}:inflight") == WINDOW,
        30,
        "a full window",
    )
    assert waiting() <= WINDOW
    started = time.monotonic()
    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status in ("canceling", "ended")
    assert canceling.cancel_initiated_at is not None
    ended = _wait_ended(client, created.id, timeout=30)
    assert time.monotonic() - started < 10
    assert ended.request_counts.canceled + ended.request_counts.succeeded == 500  # type: ignore[attr-defined]
    kinds = {r.result.type for r in client.messages.batches.results(created.id)}
    assert kinds <= {"canceled", "succeeded"} and "canceled" in kinds


def test_another_tenants_batch_is_not_found(batch_stack):
    """An unknown batch id is a 404 in Anthropic's envelope (the same answer another tenant's gets)."""
    response = httpx.get(f"{batch_stack.api}/v1/messages/batches/msgbatch_nope", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


KEY_A, KEY_B = "batch-key-a", "batch-key-b"


@pytest.fixture(scope="module")
def tenant_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedStack]:
    """Two API keys and a 3-second batch deadline."""
    running = scripted_stack(
        tmp_path_factory.mktemp("batch-tenants"),
        SLUICE_API_KEYS=f"{KEY_A},{KEY_B}",
        SLUICE_BATCH_EXPIRY_SECONDS="3",
        SLUICE_BATCH_WINDOW="2",
        SLUICE_BATCH_FEED_INTERVAL_SECONDS="0.1",
    )
    name = hostname("batchtenant")
    running.stack.start_worker(name, queues="sluice.local", concurrency=1, pool="prefork")
    wait_for(lambda: running.redis.zcard("sluice:workers") > 0, 60, "the worker's heartbeat")
    yield running
    running.stop()


def test_a_batch_past_its_deadline_ends_with_expired_results(tenant_stack):
    """Requests that could not run before the deadline are ``expired``, the batch ``ended``."""
    client = anthropic.Anthropic(api_key=KEY_A, base_url=tenant_stack.api, max_retries=0)
    created = client.messages.batches.create(
        requests=[_request(f"r{i}", model="blocker", max_tokens=100000) for i in range(20)]  # type: ignore[list-item]
    )
    ended = _wait_ended(client, created.id, timeout=60)
    assert ended.request_counts.expired == 20  # type: ignore[attr-defined]
    assert {r.result.type for r in client.messages.batches.results(created.id)} == {"expired"}


def test_batches_and_webhook_endpoints_belong_to_their_key(tenant_stack):
    """Another key gets 404 for a batch and sees neither it in its list nor the first key's endpoints."""
    a = anthropic.Anthropic(api_key=KEY_A, base_url=tenant_stack.api, max_retries=0)
    b = anthropic.Anthropic(api_key=KEY_B, base_url=tenant_stack.api, max_retries=0)
    created = a.messages.batches.create(requests=[_request("x")])  # type: ignore[list-item]
    with pytest.raises(anthropic.NotFoundError):
        b.messages.batches.retrieve(created.id)
    with pytest.raises(anthropic.NotFoundError):
        b.messages.batches.cancel(created.id)
    assert created.id not in [x.id for x in b.messages.batches.list().data]
    assert created.id in [x.id for x in a.messages.batches.list().data]
    hooks = f"{tenant_stack.api}/v1/webhook_endpoints"
    made = httpx.post(
        hooks, json={"url": "https://93.184.215.14/hook"}, headers={"x-api-key": KEY_A}, timeout=10
    )
    assert made.status_code == 200, made.text
    assert httpx.get(hooks, headers={"x-api-key": KEY_B}, timeout=10).json()["data"] == []
    gone = httpx.delete(f"{hooks}/{made.json()['id']}", headers={"x-api-key": KEY_B}, timeout=10)
    assert gone.status_code == 404
    assert len(httpx.get(hooks, headers={"x-api-key": KEY_A}, timeout=10).json()["data"]) == 1


def test_cli_submits_a_jsonl_file_and_prints_status_and_results(batch_stack, tmp_path):
    """``sluice batch submit|status|results`` round-trip a JSONL file (bare ChatBody lines get ids)."""
    sluice = str(Path(sys.executable).parent / "sluice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update({"SLUICE_URL": batch_stack.api, "NO_COLOR": "1"})
    jsonl = tmp_path / "requests.jsonl"
    lines = [json.dumps(_request("first")), "", json.dumps(_request("x")["params"])]
    jsonl.write_text("\n".join(lines) + "\n")

    def sluice_run(*args: str) -> str:
        done = subprocess.run(
            [sluice, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    batch_id = sluice_run("batch", "submit", str(jsonl)).strip()
    assert batch_id.startswith("msgbatch_")
    wait_for(lambda: "ended" in sluice_run("batch", "status", batch_id), 60, "the batch's end")
    assert sluice_run("batch", "status", batch_id).strip() == f"{batch_id}: ended (succeeded 2)"
    results = [json.loads(line) for line in sluice_run("batch", "results", batch_id).splitlines()]
    assert [(r["custom_id"], r["result"]["type"]) for r in results] == [
        ("first", "succeeded"),
        ("line-3", "succeeded"),
    ]


def test_list_pages_newest_first_with_after_and_before(client):
    """``limit`` pages newest first; ``after_id`` goes on to older ones, ``before_id`` back to newer."""
    made = [client.messages.batches.create(requests=[_request("p")]).id for _ in range(3)]  # type: ignore[list-item]
    newest = list(reversed(made))
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest[:2] and first.has_more
    assert first.first_id == newest[0] and first.last_id == newest[1]
    older = client.messages.batches.list(limit=1, after_id=newest[1])
    assert [b.id for b in older.data] == newest[2:3]
    newer = client.messages.batches.list(limit=5, before_id=newest[2])
    assert [b.id for b in newer.data] == newest[:2] and not newer.has_more
