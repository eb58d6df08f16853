"""The Redis primary SIGKILLed mid-generation: Sentinel promotes a replica and every component
follows it; the running stream ends exactly once, queued work runs, new submits succeed."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import Watcher, chat, post, script_text, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Failover time (down-after 1 s, election, promotion) plus the bound this test allows for the
#: clients to find the new primary; generous, as the machine may be busy.
SUBMIT_BOUND_SECONDS = 60


def _first_submit(api: str) -> tuple[str, float]:
    """Submit until one is accepted; returns its id and how long that took."""
    started = time.monotonic()

    def accepted() -> str | None:
        response = post(api, chat(max_tokens=5, model="fast"))
        return str(response.json()["message_id"]) if response.status_code == 200 else None

    message_id = wait_until(accepted, SUBMIT_BOUND_SECONDS, "a submit accepted after the failover", 0.2)
    return message_id, time.monotonic() - started


@pytest.mark.parametrize(("pool", "concurrency"), [("prefork", 1), ("threads", 4)])
def test_primary_killed_mid_generation_fails_over_without_losing_a_delta(make_ha_stack, pool, concurrency):
    """SIGKILL of the primary: a replica is promoted; the running message ends completed with
    its exact text once (same stream, read by an observer that resumes with Last-Event-ID); a
    queued message runs; a submit succeeds within the failover time plus a bound; a message
    completed before the kill is intact on the new primary. Both worker pools (the local
    models' prefork, the upstream models' threads) ride it out: the worker process survives
    (kombu's detached-channel error is a connection error, ``workers/celery_app.py``)."""
    ha = make_ha_stack(replicas=2)
    worker = ha.worker("w1", pool=pool, concurrency=concurrency)
    api = ha.start_api()
    ha.stack.wait_ready(api)
    done = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    wait_until(lambda: status_of(api, done)["status"] == "completed", 60, "a message before the kill")
    before = [(f.id, f.event, f.raw_data) for f in Watcher([api], done).wait(60)]

    running = post(api, chat(max_tokens=100)).json()["message_id"]
    # Known gap (session 4): after the failover an observer's live tail was seen, rarely and under
    # load, to get only pings; the observer reconnects with Last-Event-ID after 20 s of that, and
    # the exact-text checks below still hold. ``watcher.stalls`` is printed.
    watcher = Watcher([api], running, stall_seconds=20)
    wait_until(lambda: sum(f.event == "content_block_delta" for f in watcher.frames) >= 10, 60, "deltas")
    queued = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    old_primary = ha.kill_primary()

    after, took = _first_submit(api)
    assert ha.topology.primary_port() != old_primary
    frames = watcher.wait(180)
    check_grammar(frames)
    assert text_of(frames) == script_text(100)
    assert frames[-1].event == "message_stop"
    assert watcher.connections >= 2  # the observer did lose its stream and resumed it
    for message_id in (queued, after, running):
        wait_until(lambda m=message_id: status_of(api, m)["status"] == "completed", 120, f"{message_id}")
    assert [(f.id, f.event, f.raw_data) for f in Watcher([api], done).wait(60)] == before
    assert worker.alive()
    print(f"first submit accepted after {took:.1f}s; observer stalls: {watcher.stalls}")


def test_password_protected_topology_serves_submit_and_stream(make_ha_stack):
    """With SLUICE_REDIS_PASSWORD, sentinels and nodes require it; the stack still runs end to end."""
    ha = make_ha_stack(replicas=1, password="s3cret-pass")
    ha.worker("w1")
    api = ha.start_api()
    ha.stack.wait_ready(api)
    message_id = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    frames = Watcher([api], message_id).wait(60)
    check_grammar(frames)
    assert status_of(api, message_id)["status"] == "completed"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=ha.topology.primary_port()).ping()
    assert httpx.get(f"{api}/ready", timeout=5).status_code == 200
