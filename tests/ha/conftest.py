"""A stack on a Sentinel-managed Redis (primary, replicas, three sentinels) for failover tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from deploy.redis_ha import Topology, start_topology
from deploy.stack import Process, Stack
from shared.redis_client import redis_client
from shared.settings import load_settings
from tests.reliability.conftest import MODELS_TOML

#: Sentinel timings for tests: the primary counts as down after 1 s without replies.
DOWN_AFTER_MS = 1000


class HaStack:
    """Workers and APIs over a Sentinel-managed Redis; ``redis`` follows the primary."""

    def __init__(self, tmp: Path, replicas: int, password: str | None, env: dict[str, str]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        models = tmp / "models.toml"
        models.write_text(MODELS_TOML)
        base = {
            "SLUICE_MODELS_FILE": str(models),
            "SLUICE_PING_INTERVAL_SECONDS": "0.5",
            "SLUICE_LOG_JSON": "false",
            "SLUICE_LOCK_LEASE_SECONDS": "2",
            "SLUICE_REDIS_WAIT_MS": "500",
        }
        self.stack = Stack(tmp, env={**base, **env})
        self.topology: Topology = start_topology(
            self.stack,
            replicas=replicas,
            password=password,
            down_after_ms=DOWN_AFTER_MS,
            failover_timeout_ms=5000,
            min_replicas_to_write=1 if replicas > 1 else 0,
        )
        settings = load_settings({k: v for k, v in self.stack.env.items() if k.startswith("SLUICE_")})
        self.redis: redis.Redis = redis_client(settings, "ha-test")
        self.replicas = replicas
        self.workers: list[Process] = []

    def worker(self, name: str, *, pool: str = "prefork", concurrency: int = 1, **env: str) -> Process:
        """Start one more Celery worker."""
        process = self.stack.start_worker(
            f"{name}-{os.getpid()}", pool=pool, concurrency=concurrency, env=env
        )
        self.workers.append(process)
        return process

    def start_api(self, **env: str) -> str:
        """Start one more gunicorn API process; returns its URL."""
        return self.stack.start_api(env=env)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.topology.primary_port()
        self.topology.nodes[port].signal(9)
        self.topology.nodes[port].popen.wait(10)
        return port

    def stop(self) -> None:
        self.redis.close()
        self.stack.stop()


@pytest.fixture
def make_ha_stack(tmp_path: Path) -> Iterator[Callable[..., HaStack]]:
    """A fresh Sentinel-managed stack per call (the test starts workers and APIs)."""
    made: list[HaStack] = []

    def make(replicas: int = 2, password: str | None = None, **env: str) -> HaStack:
        created = HaStack(tmp_path / f"ha{len(made)}", replicas, password, env)
        made.append(created)
        return created

    yield make
    for created in made:
        created.stop()
