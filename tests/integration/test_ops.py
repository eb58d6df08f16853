"""Operations: the API's and a worker's metrics endpoints, structured logs, and Flower."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.probes import free_port, wait_for
from tests.integration.helpers import body, submit, wait_status
from tests.integration.stacks import (
    SCRIPTED_MODELS,
    ScriptedStack,
    hostname,
    make_run,
    scripted_stack,
    wait_workers,
)

pytestmark = pytest.mark.integration

FLOWER_AUTH = ("ops", "s3cret")


class Ops:
    """A scripted stack with a metrics-serving prefork worker and Flower behind basic auth."""

    def __init__(self, running: ScriptedStack, worker: str, worker_metrics: str, flower: str) -> None:
        self.running = running
        self.api = running.api
        self.worker = worker
        self.worker_metrics = worker_metrics
        self.flower = flower


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    running = scripted_stack(tmp_path_factory.mktemp("ops"), SLUICE_PING_INTERVAL_SECONDS="0.3")
    try:
        flower = running.stack.start_flower(free_port(), ":".join(FLOWER_AUTH))
        name, port = hostname("ops"), free_port()
        running.stack.start_worker(
            name, queues="sluice.local", pool="prefork", concurrency=1, metrics_port=port
        )
        wait_workers(running.api, [name])
        yield Ops(running, name, f"http://127.0.0.1:{port}/metrics", flower)
    finally:
        running.stop()


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text endpoint, keyed by name and labels."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def _blocked(ops: Ops) -> str:
    blocker = submit(ops.api, body(model="blocker", max_tokens=100000))
    wait_status(ops.api, blocker, {"processing"})
    return blocker


def _cancel(ops: Ops, message_id: str) -> None:
    httpx.post(f"{ops.api}/v1/messages/async/{message_id}/cancel", timeout=10).raise_for_status()


def test_api_metrics_count_requests_and_submit_latency(ops):
    """``/metrics`` counts requests by route template and status, and times async submits."""
    before = samples(f"{ops.api}/metrics")
    message_id = submit(ops.api, body("x", model="quick", max_tokens=2))
    wait_status(ops.api, message_id, {"completed"})
    httpx.get(f"{ops.api}/v1/messages/async/nope/status", timeout=10)
    after = samples(f"{ops.api}/metrics")
    submit_route = {"route": "/v1/messages/async", "method": "POST", "status": "200"}
    missing = {"route": "/v1/messages/async/<message_id>/status", "method": "GET", "status": "404"}
    for labels in (submit_route, missing):
        grew = value(after, "sluice_http_requests_total", **labels) - value(
            before, "sluice_http_requests_total", **labels
        )
        assert grew == 1, labels
    assert (
        value(after, "sluice_submit_latency_seconds_count")
        == value(before, "sluice_submit_latency_seconds_count") + 1
    )


def test_queue_depth_is_reported_per_queue_and_band(ops):
    """Waiting messages show in ``sluice_queue_depth`` under their queue and band, all ten bands listed."""
    blocker = _blocked(ops)
    try:
        waiting = [submit(ops.api, body("x", model="quick", max_tokens=1, priority=p)) for p in (-5, 5, 5)]
        found = samples(f"{ops.api}/metrics")
        depth = {b: value(found, "sluice_queue_depth", queue="sluice.local", band=str(b)) for b in range(10)}
        assert depth == {b: {0: 1.0, 9: 2.0}.get(b, 0.0) for b in range(10)}
        assert ("sluice_queue_depth", frozenset({"queue": "sluice.upstream", "band": "0"}.items())) in found

        def pending_counted() -> bool:
            now = samples(f"{ops.api}/metrics")
            return value(now, "sluice_messages", status="pending") == 3 and (
                value(now, "sluice_messages", status="processing") == 1
            )

        wait_for(pending_counted, 15, "three pending and one processing message in sluice_messages")
    finally:
        _cancel(ops, blocker)
    for message_id in waiting:
        wait_status(ops.api, message_id, {"completed"})


def test_open_sse_connections_are_gauged(ops):
    """``sluice_sse_connections_open`` rises while a stream is open and falls when its client leaves."""
    blocker = _blocked(ops)
    opened, leave = threading.Event(), threading.Event()

    def watch() -> None:
        with httpx.stream("GET", f"{ops.api}/v1/messages/async/{blocker}/stream", timeout=30) as response:
            assert response.status_code == 200
            opened.set()
            leave.wait(30)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert opened.wait(30)
        gauge = lambda: value(samples(f"{ops.api}/metrics"), "sluice_sse_connections_open")  # noqa: E731
        wait_for(lambda: gauge() == 1, 15, "one open SSE connection")
        leave.set()
        watcher.join(30)
        wait_for(lambda: gauge() == 0, 15, "no open SSE connection after the client left")
    finally:
        leave.set()
        _cancel(ops, blocker)


def test_worker_metrics_are_served_from_prefork_children(ops):
    """The worker's endpoint sums its children's samples: outcome, queue wait, TTFT, tokens/s, duration."""
    before = samples(ops.worker_metrics)
    message_id = submit(ops.api, body("x", model="quick", max_tokens=3))
    wait_status(ops.api, message_id, {"completed"})

    def recorded() -> bool:
        now = samples(ops.worker_metrics)
        labels = {"model": "quick", "queue": "sluice.local", "outcome": "completed"}
        return (
            value(now, "sluice_worker_generations_total", **labels)
            == value(before, "sluice_worker_generations_total", **labels) + 1
        )

    wait_for(recorded, 15, "the generation counted by the worker")
    after = samples(ops.worker_metrics)
    for name, labels in (
        ("sluice_worker_queue_wait_seconds_count", {"queue": "sluice.local"}),
        ("sluice_worker_time_to_first_token_seconds_count", {"model": "quick"}),
        ("sluice_worker_tokens_per_second_count", {"model": "quick"}),
        ("sluice_worker_generation_duration_seconds_count", {"model": "quick", "outcome": "completed"}),
    ):
        assert value(after, name, **labels) == value(before, name, **labels) + 1, name


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_api_and_worker_log_json_lines_with_message_and_correlation_ids(ops):
    """The API's request line and the worker's lines for a message carry its id and correlation id."""
    correlation_id = f"corr-{uuid.uuid4()}"
    message_id = submit(ops.api, body("x", model="quick", max_tokens=2, correlation_id=correlation_id))
    wait_status(ops.api, message_id, {"completed"})
    logs = {p.name.split("-")[0]: p for p in ops.running.stack.processes}

    def lines_of(kind: str) -> list[dict]:
        return [
            line
            for line in _json_lines(logs[kind].log_path.read_text())
            if line.get("message_id") == message_id
        ]

    wait_for(lambda: any(line["event"] == "finished" for line in lines_of("worker")), 15, "the worker's log")
    worker_lines = lines_of("worker")
    assert {line["correlation_id"] for line in worker_lines} == {correlation_id}
    assert all(line["component"] == "worker" for line in worker_lines)
    api_lines = lines_of("api")
    requests = [line for line in api_lines if line["event"] == "request"]
    assert requests and requests[0]["route"] == "/v1/messages/async"
    assert {line["correlation_id"] for line in requests} == {correlation_id}
    every = _json_lines(logs["api"].log_path.read_text()) + _json_lines(logs["worker"].log_path.read_text())
    assert every and all("message_id" in line and "correlation_id" in line for line in every)


def test_flower_shows_workers_and_tasks(ops):
    """Flower's API lists the worker and the generate tasks it ran, with their message ids."""
    message_id = submit(ops.api, body("x", model="quick", max_tokens=1))
    wait_status(ops.api, message_id, {"completed"})

    def worker_listed() -> bool:
        workers = httpx.get(
            f"{ops.flower}/api/workers", params={"refresh": "1"}, auth=FLOWER_AUTH, timeout=20
        ).json()
        return any(name.startswith(ops.worker + "@") for name in workers)

    def task_listed() -> bool:
        tasks = httpx.get(f"{ops.flower}/api/tasks", auth=FLOWER_AUTH, timeout=10).json()
        return any(
            t["name"] == "sluice.generate" and message_id in t["args"] and t["state"] == "SUCCESS"
            for t in tasks.values()
        )

    wait_for(worker_listed, 60, "the worker in Flower", interval=1)
    wait_for(task_listed, 30, "the task in Flower", interval=0.5)


def test_flower_requires_basic_auth_when_set(ops):
    """Without credentials, or with wrong ones, Flower answers 401."""
    assert httpx.get(f"{ops.flower}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{ops.flower}/api/tasks", auth=("ops", "wrong"), timeout=10).status_code == 401


def test_make_run_puts_flower_behind_basic_auth(tmp_path):
    """With ``SLUICE_FLOWER_BASIC_AUTH``, ``make run``'s Flower refuses anonymous calls and lists workers."""
    models = tmp_path / "models.toml"
    models.write_text(SCRIPTED_MODELS)
    flower_port = free_port()
    with make_run(
        tmp_path,
        SLUICE_PORT=str(free_port()),
        SLUICE_FLOWER_PORT=str(flower_port),
        SLUICE_FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH),
        SLUICE_MODELS_FILE=str(models),
    ):
        flower = f"http://127.0.0.1:{flower_port}"
        assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401

        def local_worker_listed() -> bool:
            workers = httpx.get(
                f"{flower}/api/workers", params={"refresh": "1"}, auth=FLOWER_AUTH, timeout=20
            ).json()
            return any(name.startswith("local@") for name in workers)

        wait_for(local_worker_listed, 60, "make run's local worker in Flower", interval=1)


def test_every_api_log_line_is_json(ops):
    """Gunicorn's own lines and the app's lines alike are JSON objects with both ids."""
    httpx.get(f"{ops.api}/health", timeout=10)
    api_log = next(p for p in ops.running.stack.processes if p.name.startswith("api-"))
    lines = [line for line in api_log.log_path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert any(line["logger"] == "gunicorn.error" for line in parsed)
    assert all({"message_id", "correlation_id", "component"} <= set(line) for line in parsed)
