"""Conversation routing with two real worker processes of the embedded model."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from deploy.probes import free_port, wait_for
from deploy.stack import Stack
from tests.integration.helpers import observe, submit, text_of, wait_status


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """Redis, the API (routing waits up to 5 s for a free holder) and two model workers."""
    env = {
        "SLUICE_RETENTION_SECONDS": "600",
        "SLUICE_LOG_JSON": "false",
        "SLUICE_MODEL_THREADS": "1",
        "SLUICE_ROUTE_WAIT_MS": "5000",
    }
    stack = Stack(tmp_path_factory.mktemp("routing"), env=env)
    ports: dict[str, int] = {}
    try:
        stack.start_redis(persistent=False)
        for name in ("r1", "r2"):
            ports[f"{name}-{os.getpid()}"] = port = free_port()
            stack.start_worker(f"{name}-{os.getpid()}", metrics_port=port)
        api = stack.start_api()
        stack.wait_ready(api, timeout=120)
        yield api, ports
    finally:
        stack.stop()


def _turn(api: str, messages: list[dict]) -> tuple[str, dict]:
    message_id = submit(api, {"model": "default", "max_tokens": 12, "temperature": 0, "messages": messages})
    text = text_of(observe(api, message_id))
    return text, wait_status(api, message_id, {"completed"})


def _metric(port: int, name: str) -> float:
    """The sum of a worker's samples whose line starts with ``name``."""
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


def test_a_continuing_conversation_lands_on_the_worker_holding_its_prefix(two_workers):
    """Two conversations, interleaved: each next turn runs where its previous turn ran, and
    reuses that worker's cached prompt (live or restored), as the worker's metrics record."""
    api, ports = two_workers
    chats = {
        "a": [{"role": "user", "content": "Tell me about owls and where they live in winter."}],
        "b": [{"role": "user", "content": "Tell me about the tides and what makes them."}],
    }
    first: dict[str, dict] = {}
    for key, messages in chats.items():
        text, first[key] = _turn(api, messages)
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Why?"}]
    for key, messages in chats.items():
        _, second = _turn(api, messages)
        meta, before = second["metadata"], first[key]["metadata"]
        assert meta["route"].endswith(before["worker"])
        assert meta["worker"] == before["worker"]
        assert meta["prompt_cache"] in ("live", "restored")
        assert meta["cached_tokens"] >= before["input_tokens"] - 1
    wait_for(
        lambda: sum(_metric(p, 'sluice_worker_routing_total{decision="own"}') for p in ports.values()) >= 2,
        10,
        "the routing metric",
    )
    hits = sum(
        _metric(p, f'sluice_worker_prompt_cache_total{{model="default",source="{source}"}}')
        for p in ports.values()
        for source in ("live", "restored")
    )
    assert hits >= 2
