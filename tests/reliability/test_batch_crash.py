"""A batch survives its worker: SIGKILL mid-batch, a new worker resumes the request and feeds the rest."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from tests.reliability.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_killed_worker_mid_batch_loses_no_request(make_stack):
    """Every request of the batch succeeds once, with its full text, after the only worker is killed."""
    stack = make_stack(SLUICE_BATCH_WINDOW="2", SLUICE_BATCH_FEED_INTERVAL_SECONDS="0.1")
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    requests = [
        {"custom_id": f"r{i}", "params": {"max_tokens": 12, "messages": [{"role": "user", "content": "x"}]}}
        for i in range(6)
    ]
    batch_id = httpx.post(f"{api}/v1/messages/batches", json={"requests": requests}, timeout=10).json()["id"]
    first = f"sluice:msg:{{{batch_id}.r0}}:status"
    wait_until(
        lambda: stack.redis.hget(first, "output_tokens") not in (None, "0"), 60, "the first request's tokens"
    )
    stack.workers[0].signal(signal.SIGKILL)
    stack.workers[0].popen.wait(10)
    stack.worker("w2")

    def ended() -> bool:
        found = httpx.get(f"{api}/v1/messages/batches/{batch_id}", timeout=10).json()
        return bool(found["processing_status"] == "ended")

    wait_until(ended, 120, "the batch's end")
    batch = httpx.get(f"{api}/v1/messages/batches/{batch_id}", timeout=10).json()
    assert batch["request_counts"]["succeeded"] == 6, batch
    lines = [
        json.loads(x)
        for x in httpx.get(f"{api}/v1/messages/batches/{batch_id}/results", timeout=10).text.splitlines()
    ]
    texts = {x["custom_id"]: x["result"]["message"]["content"][0]["text"] for x in lines}
    assert sorted(texts) == [f"r{i}" for i in range(6)]
    assert len(set(texts.values())) == 1 and len(next(iter(texts.values())).split()) == 12
    assert stack.redis.hget(first, "resumes") == "1"
