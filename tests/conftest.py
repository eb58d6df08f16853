"""Fixtures: a real redis-server on a free port, and a real stack (worker + gunicorn API)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from deploy.stack import Stack
from shared.store import MessageStore

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of the suite's own, on a free port."""
    stack = Stack(tmp_path_factory.mktemp("redis"))
    url = stack.start_redis(persistent=False)
    yield url
    stack.stop()


@pytest.fixture(params=["fakeredis", "redis-server"])
def redis_client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The store contract runs on fakeredis and on a real redis-server alike."""
    if request.param == "fakeredis":
        client = fakeredis.FakeRedis(decode_responses=True)
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def store(redis_client: redis.Redis) -> MessageStore:
    return MessageStore(
        redis_client,
        retention_seconds=60,
        active_ttl_seconds=600,
        stream_maxlen=1000,
        script_flags=not isinstance(redis_client, fakeredis.FakeRedis),
    )


class LiveStack:
    """A running stack: its API base URL, a Redis client and the processes."""

    def __init__(self, stack: Stack, api: str) -> None:
        self.stack = stack
        self.api = api
        self.redis = redis.Redis.from_url(stack.env["SLUICE_REDIS_URL"], decode_responses=True)


def start_stack(tmp: Path, env: dict[str, str], workers: int = 1) -> LiveStack:
    """redis-server + ``workers`` Celery workers + gunicorn, waiting until /ready."""
    ARTIFACTS.mkdir(exist_ok=True)
    stack = Stack(tmp, env=env)
    try:
        stack.start_redis(persistent=False)
        for index in range(workers):
            stack.start_worker(f"w{index + 1}-{os.getpid()}")
        api = stack.start_api()
        stack.wait_ready(api, timeout=120)
    except Exception:
        stack.stop()
        raise
    return LiveStack(stack, api)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """The real stack with the embedded model: one worker, concurrency 1."""
    env = {
        "SLUICE_PING_INTERVAL_SECONDS": "0.5",
        "SLUICE_RETENTION_SECONDS": "600",
        "SLUICE_LOG_JSON": "false",
    }
    running = start_stack(tmp_path_factory.mktemp("stack"), env)
    yield running
    running.stack.stop()
