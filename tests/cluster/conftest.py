"""A Redis Cluster (3 primaries, 3 replicas) and a control redis-server, started by the tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from deploy.redis_cluster import ClusterTopology, start_cluster
from deploy.stack import Process, Stack
from shared.settings import Settings
from shared.store.cluster import ClusterMessageStore, store_for
from tests.reliability.conftest import MODELS_TOML


class ClusterBed:
    """A control redis-server plus a Redis Cluster, sharing one ``Stack`` (and its env)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        models = tmp / "models.toml"
        models.write_text(MODELS_TOML)
        base = {
            "SLUICE_MODELS_FILE": str(models),
            "SLUICE_PING_INTERVAL_SECONDS": "0.5",
            "SLUICE_LOG_JSON": "false",
            "SLUICE_LOCK_LEASE_SECONDS": "2",
        }
        self.stack = Stack(tmp, env={**base, **(env or {})})
        self.stack.start_redis(persistent=False)
        self.topology: ClusterTopology = start_cluster(self.stack, primaries=3, replicas=1)
        self.control = redis.Redis.from_url(self.stack.env["SLUICE_REDIS_URL"], decode_responses=True)
        self.settings = Settings(
            redis_url=self.stack.env["SLUICE_REDIS_URL"], store_cluster_nodes=self.topology.addresses
        )
        self.workers: list[Process] = []

    def store(self, **options: object) -> ClusterMessageStore:
        """A cluster-mode store over this bed (as the API builds it)."""
        options = {"retention_seconds": 60, "active_ttl_seconds": 600, "stream_maxlen": 1000, **options}
        store = store_for(self.settings, self.control, "cluster-test", **options)
        assert isinstance(store, ClusterMessageStore)
        return store

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

    def stop(self) -> None:
        self.control.close()
        self.stack.stop()


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterBed]:
    """One bed for a module's tests that kill nothing."""
    created = ClusterBed(tmp_path_factory.mktemp("cluster"))
    yield created
    created.stop()


@pytest.fixture
def make_bed(tmp_path: Path) -> Iterator[Callable[..., ClusterBed]]:
    """A fresh bed per call, for tests that kill cluster nodes."""
    made: list[ClusterBed] = []

    def make(**env: str) -> ClusterBed:
        created = ClusterBed(tmp_path / f"bed{len(made)}", env)
        made.append(created)
        return created

    yield make
    for created in made:
        created.stop()
