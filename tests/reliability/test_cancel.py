"""Cancellation: fast on the embedded model, idempotent, final, and sticky across worker restarts."""

from __future__ import annotations

import json
import signal
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.integration.helpers import check_grammar
from tests.reliability.helpers import Watcher, chat, post, queued_tasks, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ESSAY = "Write a very long essay about the history of the ocean."


def _cancel(api: str, message_id: str) -> httpx.Response:
    return httpx.post(f"{api}/v1/messages/async/{message_id}/cancel", timeout=10)


def _deltas(watcher: Watcher) -> int:
    return sum(f.event == "content_block_delta" for f in watcher.frames)


def test_cancel_reaches_the_terminal_event_fast_on_the_embedded_model(make_stack):
    """From the cancel call to message_stop at an observer: recorded per run, p99 within a generous bound."""
    stack = make_stack(SLUICE_MODELS_FILE="")
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    latencies, next_start = [], []
    for run in range(10):
        message_id = post(api, chat(max_tokens=2000, text=ESSAY, seed=run)).json()["message_id"]
        submitted = time.monotonic()
        watcher = Watcher([api], message_id)
        wait_until(lambda w=watcher: _deltas(w) >= 3 or w.done.is_set(), 60, "tokens")
        if run:
            next_start.append(time.monotonic() - submitted)
        started = time.monotonic()
        answer = _cancel(api, message_id)  # waits up to 2 s for the end; a loaded host may need longer
        assert answer.status_code == 200 and answer.json()["status"] in {"cancelled", "processing"}
        frames = watcher.wait(30)
        latencies.append(time.monotonic() - started)
        check_grammar(frames)
        assert frames[-2].data["delta"]["stop_reason"] == "cancelled"
    ordered = sorted(latencies)
    figures = {
        "runs": len(latencies),
        "cancel_to_terminal_ms_p50": round(statistics.median(ordered) * 1000, 1),
        "cancel_to_terminal_ms_p99": round(
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1
        ),
        "next_message_third_token_ms_p50": round(statistics.median(next_start) * 1000, 1),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cancel-latency.json").write_text(json.dumps(figures, indent=2))
    print(figures)
    # The figure is the benchmark (target: p99 <= 200 ms on an idle host); the bound only
    # catches a cancel that is not seen at all, on a CI host shared with other work.
    assert figures["cancel_to_terminal_ms_p99"] < 15000


def test_concurrent_cancels_agree_and_the_message_stays_cancelled(make_stack):
    """Eight simultaneous cancels all answer cancelled; after the worker moved on it is still cancelled."""
    stack = make_stack()
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    message_id = post(api, chat(max_tokens=200)).json()["message_id"]
    wait_until(lambda: status_of(api, message_id)["status"] == "processing", 60, "it to run")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _cancel(api, message_id), range(8)))
    assert {(a.status_code, a.json()["status"]) for a in answers} == {(200, "cancelled")}
    after = post(api, chat(max_tokens=3, model="fast")).json()["message_id"]
    wait_until(lambda: status_of(api, after)["status"] == "completed", 60, "the next message")
    assert status_of(api, message_id)["status"] == "cancelled"
    frames = Watcher([api], message_id).wait(30)
    check_grammar(frames)
    assert frames[-2].data["delta"]["stop_reason"] == "cancelled"


def test_cancel_racing_completion_never_contradicts_itself(make_stack):
    """Cancels fired as short messages finish: the status and the stream's ending always agree."""
    stack = make_stack()
    stack.worker("w1", pool="threads", concurrency=2)
    api = stack.start_api()
    stack.stack.wait_ready(api)
    ids = [post(api, chat(max_tokens=3, model="fast")).json()["message_id"] for _ in range(15)]
    for message_id in ids:
        _cancel(api, message_id)
    for message_id in ids:
        final = wait_until(
            lambda m=message_id: (
                status_of(api, m)["status"] in {"completed", "cancelled"} and status_of(api, m)
            ),
            60,
            "an ending",
        )
        frames = Watcher([api], message_id).wait(30)
        check_grammar(frames)
        cancelled = frames[-2].data["delta"]["stop_reason"] == "cancelled"
        assert cancelled == (final["status"] == "cancelled")
        assert status_of(api, message_id)["status"] == final["status"]


def test_cancelled_while_pending_never_starts_even_across_a_worker_restart(make_stack):
    """A queued message cancelled before a worker crash is skipped by the replacement worker."""
    stack = make_stack()
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    blocker = post(api, chat(max_tokens=300)).json()["message_id"]
    wait_until(lambda: status_of(api, blocker)["status"] == "processing", 60, "the blocker to run")
    queued = post(api, chat(max_tokens=3, model="fast")).json()["message_id"]
    assert _cancel(api, queued).json()["status"] == "cancelled"
    stack.workers[0].signal(signal.SIGKILL)
    stack.workers[0].popen.wait(10)
    stack.worker("w2")
    wait_until(
        lambda: (
            status_of(api, blocker)["status"] == "processing"
            and "w2-" in str(status_of(api, blocker)["metadata"].get("worker"))
        ),
        60,
        "the blocker to resume on w2",
    )
    assert _cancel(api, blocker).json()["status"] == "cancelled"
    wait_until(lambda: queued_tasks(stack.redis) == 0, 60, "the queue to drain")
    follow_up = post(api, chat(max_tokens=3, model="fast")).json()["message_id"]
    wait_until(lambda: status_of(api, follow_up)["status"] == "completed", 60, "a later message")
    final = status_of(api, queued)
    assert final["status"] == "cancelled" and "worker" not in final["metadata"]
    assert [f.event for f in Watcher([api], queued).wait(30)] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
