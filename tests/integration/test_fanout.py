"""Many SSE observers of one message through the real API: every event to each, few Redis connections."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.integration.helpers import body, observe, submit, wait_status
from tests.sse import parse_lines

pytestmark = pytest.mark.integration

OBSERVERS = 60


def test_many_observers_share_one_tail_and_few_connections(live):
    """Sixty observers of one running message each get every event; the API holds ≤ 4 Redis connections."""
    message_id = submit(live.api, body("Write a long essay about rivers.", max_tokens=400, seed=3))
    wait_status(live.api, message_id, {"processing", "completed"})
    results: dict[int, list] = {}
    started = threading.Barrier(OBSERVERS + 1)

    def watch(slot: int) -> None:
        frames = []
        url = f"{live.api}/v1/messages/async/{message_id}/stream"
        with httpx.stream("GET", url, timeout=120) as response:
            started.wait(60)
            frames = [f for f in parse_lines(response.iter_lines()) if f.event != "ping"]
        results[slot] = frames

    threads = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(OBSERVERS)]
    for thread in threads:
        thread.start()
    started.wait(60)
    names = [c.get("name", "") for c in live.redis.client_list()]
    held = [n for n in names if n.startswith("sluice-api")]
    httpx.post(f"{live.api}/v1/messages/async/{message_id}/cancel", timeout=10)
    for thread in threads:
        thread.join(120)
    assert len(held) <= 4, held
    expected = [(f.id, f.raw_data) for f in observe(live.api, message_id)]
    assert len(results) == OBSERVERS
    for frames in results.values():
        assert [(f.id, f.raw_data) for f in frames] == expected
