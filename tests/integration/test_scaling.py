"""Routing by queue and horizontal scaling: separate worker types, several workers, no double runs."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from deploy.probes import free_port, free_port_pair
from tests.integration.helpers import body, check_grammar, observe, status, submit, wait_status
from tests.integration.stacks import (
    SCRIPTED_MODELS,
    ScriptedStack,
    hostname,
    make_run,
    scripted_stack,
    wait_workers,
)

pytestmark = pytest.mark.integration

UPSTREAM_WORKERS = 3
RECEIVED = re.compile(r"Task sluice\.generate\[([0-9a-f-]+)\] received")


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedStack]:
    """A prefork worker on the local queue and three thread-pool workers on the upstream queue."""
    running = scripted_stack(tmp_path_factory.mktemp("scaling"))
    local = hostname("local")
    running.stack.start_worker(local, queues="sluice.local", pool="prefork", concurrency=1)
    upstream = [hostname(f"up{i}") for i in range(1, UPSTREAM_WORKERS + 1)]
    for name in upstream:
        running.stack.start_worker(name, queues="sluice.upstream", pool="threads", concurrency=2)
    wait_workers(running.api, [local, *upstream])
    yield running
    running.stop()


def _worker_logs(stack: ScriptedStack, prefix: str) -> list[str]:
    return [p.log_path.read_text() for p in stack.stack.processes if p.name.startswith(f"worker-{prefix}")]


def test_a_slow_local_generation_does_not_hold_up_upstream_traffic(scaled):
    """While the only local slot runs a long generation, an upstream-queue model completes."""
    blocker = submit(scaled.api, body(model="blocker", max_tokens=100000))
    wait_status(scaled.api, blocker, {"processing"})
    try:
        waiting_local = submit(scaled.api, body("x", model="quick", max_tokens=3))
        remote = submit(scaled.api, body("x", model="remote", max_tokens=5))
        done = wait_status(scaled.api, remote, {"completed"}, timeout=60)
        assert done["metadata"]["queue"] == "sluice.upstream"
        assert done["metadata"]["worker"].startswith("up")
        assert status(scaled.api, blocker)["status"] == "processing"
        assert status(scaled.api, waiting_local)["status"] == "pending"
    finally:
        httpx.post(f"{scaled.api}/v1/messages/async/{blocker}/cancel", timeout=10)
    wait_status(scaled.api, waiting_local, {"completed"}, timeout=60)


def test_load_spreads_over_workers_and_no_message_runs_twice(scaled):
    """Eighteen half-second upstream generations are shared by all three workers, each run exactly once."""
    before = Counter(m for log in _worker_logs(scaled, "up") for m in RECEIVED.findall(log))
    ids = [submit(scaled.api, body("x", model="remote", max_tokens=10)) for _ in range(18)]
    finished = [wait_status(scaled.api, m, {"completed"}, timeout=120) for m in ids]
    ran_on = Counter(f["metadata"]["worker"].split("@")[0] for f in finished)
    assert set(ran_on) == {hostname(f"up{i}") for i in range(1, UPSTREAM_WORKERS + 1)}, ran_on
    for message_id in ids:
        frames = observe(scaled.api, message_id, timeout=30)
        check_grammar(frames)
        assert [f.event for f in frames].count("message_start") == 1
    received = Counter(m for log in _worker_logs(scaled, "up") for m in RECEIVED.findall(log)) - before
    assert len(received) == len(ids) and set(received.values()) == {1}, received


def test_make_run_starts_an_upstream_worker_for_upstream_models(tmp_path):
    """With upstream-queue models in the registry, ``deploy.run`` also starts a thread-pool worker."""
    models = tmp_path / "models.toml"
    models.write_text(SCRIPTED_MODELS)
    api_port, flower_port = free_port(), free_port()
    metrics_port = free_port_pair()  # the local worker's port and the upstream worker's (+1)
    with make_run(
        tmp_path,
        SLUICE_PORT=str(api_port),
        SLUICE_FLOWER_PORT=str(flower_port),
        SLUICE_MODELS_FILE=str(models),
        SLUICE_WORKER_METRICS_PORT=str(metrics_port),
        SLUICE_UPSTREAM_CONCURRENCY="8",
    ) as started:
        assert "worker:  local (prefork x1) on sluice.local" in started
        assert f"worker:  upstream (threads x8) on sluice.upstream, metrics on :{metrics_port + 1}" in started
        api = f"http://127.0.0.1:{api_port}"
        remote = submit(api, body("x", model="remote", max_tokens=3))
        assert wait_status(api, remote, {"completed"})["metadata"]["worker"].startswith("upstream@")
        upstream_metrics = httpx.get(f"http://127.0.0.1:{metrics_port + 1}/metrics", timeout=10).text
        assert "sluice_worker_generations_total" in upstream_metrics
