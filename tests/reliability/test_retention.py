"""Every key has a TTL from its first write, and after the retention time nothing of a message is left."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.helpers import chat, post, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = {"x-api-key": "tenant-key"}
#: Keys that are no message's: worker heartbeats and the broker's (Celery's) own bookkeeping,
#: whose entries for a task go when the task is acknowledged (checked by ``_leftovers``).
INFRASTRUCTURE = ("sluice:workers", "_kombu.", "unacked", "sluice.local")


def _untimed(client) -> list[str]:
    """Sluice's keys without a TTL (heartbeats aside)."""
    return [
        key
        for key in client.scan_iter("sluice:*")
        if not key.startswith(INFRASTRUCTURE) and client.ttl(key) == -1 and client.type(key) != "none"
    ]


def _leftovers(client, message_ids: list[str]) -> list[str]:
    """Keys that still hold anything of these messages or of the tenant."""
    found = []
    for key in client.scan_iter("*"):
        if key.startswith(
            ("sluice:msg:", "sluice:idem:", "sluice:tenant:", "sluice:pending", "sluice:running")
        ) or (client.type(key) == "hash" and any(m in v for v in client.hvals(key) for m in message_ids)):
            found.append(key)
    return found


def _over(api: str, message_id: str) -> bool:
    """Completed, or completed and already expired (retention is tiny here)."""
    response = httpx.get(f"{api}/v1/messages/async/{message_id}/status", headers=KEY, timeout=10)
    return response.status_code == 404 or response.json()["status"] == "completed"


def test_after_a_burst_and_the_retention_time_redis_holds_nothing_of_it(make_stack):
    """Completed, cancelled, deleted and idempotent messages, locks and rate buckets all expire."""
    stack = make_stack(
        SLUICE_RETENTION_SECONDS="2",
        SLUICE_API_KEYS="tenant-key",
        SLUICE_RATE_LIMIT_PER_MINUTE="6000",
        SLUICE_MAX_CONCURRENT_PER_KEY="100",
    )
    stack.worker("w1", pool="threads", concurrency=4)
    api = stack.start_api()
    stack.stack.wait_ready(api)
    slow = post(api, chat(max_tokens=400), KEY).json()["message_id"]
    burst = [
        post(api, chat(max_tokens=5, model="fast"), {**KEY, "Idempotency-Key": f"k{i}"}).json()["message_id"]
        for i in range(20)
    ]
    doomed = post(api, chat(max_tokens=400), KEY).json()["message_id"]
    wait_until(lambda: status_of(api, slow, KEY)["status"] == "processing", 30, "the slow one to run")
    assert _untimed(stack.redis) == []  # mid-flight: every key already has its TTL
    assert httpx.post(f"{api}/v1/messages/async/{slow}/cancel", headers=KEY, timeout=10).status_code == 200
    assert httpx.delete(f"{api}/v1/messages/async/{doomed}", headers=KEY, timeout=10).status_code == 200
    wait_until(lambda: all(_over(api, m) for m in burst), 60, "the burst to end")
    assert _untimed(stack.redis) == []
    everything = [slow, doomed, *burst]
    wait_until(lambda: not _leftovers(stack.redis, everything), 30, "every key to expire")
