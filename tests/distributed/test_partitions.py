"""Faults between hosts: a worker host cut off mid-generation, a slow and lossy link between the
workers and Redis, an API host cut off under an observer. Hosts are network namespaces."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.distributed.cluster import REDIS_PORT, RELAY_PORT, Deployment
from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import script_text, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _body(tokens: int, model: str = "default") -> dict:
    return {"model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": "hi"}]}


def test_partitioned_worker_host_is_replaced_and_its_late_writes_are_refused(deployment: Deployment):
    """The worker host running a message is cut off: the message resumes on the other worker
    host once the lease lapses and completes with its exact text. The cut-off run's append
    times out (redis-py's 5 s socket timeout) and it stops; whatever it sent that reaches Redis
    after the heal is fenced (the lock is no longer its own, the message is terminal). Once the
    host is back and talking to Redis, the stored stream is exactly what the observer saw:
    0 duplicates."""
    url = deployment.start_redis()
    workers = {name: deployment.start_worker(name, url) for name in ("w1", "w2")}
    api = deployment.start_api("a1", url)
    deployment.wait_ready(api)
    message_id = deployment.submit(api, _body(150))
    observer = deployment.observe([api], message_id)
    wait_until(lambda: observer.deltas() >= 10, 60, "deltas before the partition")
    running_on = deployment.status_hash(message_id)["worker"].split("@")[0]
    cut = deployment.host(running_on)
    deployment.net.partition(cut)

    frames = observer.wait(120)
    check_grammar(frames)
    assert text_of(frames) == script_text(150)
    final = deployment.status_hash(message_id)
    assert final["status"] == "completed" and final["worker"].split("@")[0] != running_on

    deployment.net.heal(cut)
    healed = time.time()
    stale_log = workers[running_on].log_path
    wait_until(
        lambda: any(
            message_id in line and ("finished" in line or "SinkUnavailable" in line)
            for line in stale_log.read_text().splitlines()
        ),
        120,
        "the cut-off worker's run to end",
    )
    wait_until(
        lambda: deployment.worker_seen(f"{running_on}@") > healed,
        60,
        "the cut-off worker to reach Redis again after the heal",
    )
    replay = deployment.observe([api], message_id)
    assert [(f.id, f.raw_data) for f in replay.wait(60)] == [(f.id, f.raw_data) for f in frames]
    assert deployment.status_hash(message_id)["status"] == "completed"


def _run_batch(deployment: Deployment, api: str, count: int, tokens: int) -> tuple[float, list]:
    """Submit ``count`` messages of the fast model; return the seconds until all ended, and frames."""
    started = time.monotonic()
    ids = [deployment.submit(api, _body(tokens, "fast")) for _ in range(count)]
    observers = [deployment.observe([api], message_id, read_timeout=10) for message_id in ids]
    results = [observer.wait(240) for observer in observers]
    return time.monotonic() - started, results


def test_slow_lossy_links_between_workers_and_redis_still_give_well_formed_streams(deployment: Deployment):
    """25 ms each way (50 ms round trip) and 1 % packet loss on both worker hosts' links: every
    stream completes well-formed with its exact text; throughput is recorded, next to the same
    batch on clean links."""
    count, tokens = 8, 300
    slow_url = deployment.start_redis(relay_delay_ms=25)
    clean_url = slow_url.replace(f":{RELAY_PORT}/", f":{REDIS_PORT}/")
    api = deployment.start_api("a1", clean_url)
    clean_workers = [deployment.start_worker(name, clean_url) for name in ("w1", "w2")]
    deployment.wait_ready(api)
    clean_seconds, results = _run_batch(deployment, api, count, tokens)
    for process in clean_workers:
        process.stop()
    for name in ("w1", "w2"):
        deployment.start_worker(f"{name}-slow", slow_url, on=name)
        deployment.net.lossy(deployment.host(name), 1.0)

    seconds, results = _run_batch(deployment, api, count, tokens)
    expected = "alpha beta gamma delta " * (tokens // 4)
    for frames in results:
        check_grammar(frames)
        assert frames[-1].event == "message_stop"
        assert text_of(frames) == expected
    dropped = sum(deployment.net.dropped(deployment.host(name)) for name in ("w1", "w2"))
    assert all(deployment.net.loss_rules(deployment.host(name)) == 2 for name in ("w1", "w2"))
    figure = {
        "messages": count,
        "tokens_per_message": tokens,
        "workers": 2,
        "clean_tokens_per_second": round(count * tokens / clean_seconds, 1),
        "faulty_tokens_per_second": round(count * tokens / seconds, 1),
        "packets_dropped": dropped,
        "delay_ms_each_way": 25,
        "loss_percent": 1.0,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "distributed_lossy.json").write_text(json.dumps(figure, indent=2) + "\n")
    print(f"lossy links: {figure}")


def test_partitioned_api_host_observer_moves_to_the_other_with_no_gap(deployment: Deployment):
    """The API host serving an observer is cut off: the observer's reads stall, it reconnects
    to the other API host with Last-Event-ID and receives the rest: exact text, no repeat."""
    url = deployment.start_redis()
    deployment.start_worker("w1", url)
    a1 = deployment.start_api("a1", url)
    a2 = deployment.start_api("a2", url)
    deployment.wait_ready(a1)
    deployment.wait_ready(a2)
    message_id = deployment.submit(a1, _body(120))
    observer = deployment.observe([a1, a2], message_id)
    wait_until(lambda: observer.deltas() >= 10, 60, "deltas before the partition")
    deployment.net.partition(deployment.host("a1"))

    frames = observer.wait(120)
    check_grammar(frames)
    assert text_of(frames) == script_text(120)
    assert observer.connections >= 2
    assert a1 in observer.sources and a2 in observer.sources
    assert observer.sources[-1] == a2
