"""A bounded soak: two minutes of steady load; nothing lost, every stream well-formed, memory flat."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import Watcher, chat, post, rss_kb, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECONDS = 120
RATE = 4  # messages per second
WARM_UP = 30  # seconds before the memory baseline is taken
TOKENS = 20


def _ended(api: str, ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with httpx.Client(timeout=10) as client:
        for message_id in ids:
            state = client.get(f"{api}/v1/messages/async/{message_id}/status").json()["status"]
            counts[state] = counts.get(state, 0) + 1
    return counts


def test_two_minutes_of_steady_load_lose_nothing_and_leak_nothing(make_stack):
    """Every message submitted at a steady rate completes with its full text; RSS stays flat."""
    stack = make_stack()
    worker = stack.worker("w1", pool="threads", concurrency=4)
    api = stack.start_api()
    stack.stack.wait_ready(api)
    api_process = next(p for p in stack.stack.processes if p.name.startswith("api-"))
    ids: list[str] = []
    watchers: list[Watcher] = []
    baseline: dict[str, int] = {}
    start = time.monotonic()
    for n in range(SECONDS * RATE):
        pause = start + n / RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the load, not synchronising
        ids.append(post(api, chat(max_tokens=TOKENS, model="fast")).json()["message_id"])
        if n % 10 == 0:
            watchers.append(Watcher([api], ids[-1]))
        if not baseline and time.monotonic() - start > WARM_UP:
            baseline = {"api": rss_kb(api_process.popen.pid), "worker": rss_kb(worker.popen.pid)}
    wait_until(lambda: _ended(api, ids) == {"completed": len(ids)}, 120, "every message to complete")
    for watcher in watchers:
        frames = watcher.wait(60)
        check_grammar(frames)
        assert text_of(frames) == "alpha beta gamma delta " * (TOKENS // 4)
    final = {"api": rss_kb(api_process.popen.pid), "worker": rss_kb(worker.popen.pid)}
    figures = {"messages": len(ids), "rss_kb_after_warm_up": baseline, "rss_kb_at_end": final}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(figures, indent=2))
    for name, before in baseline.items():
        assert final[name] - before < 40_000, figures  # kB: flat, allowing allocator noise
