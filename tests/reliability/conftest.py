"""Stacks for fault injection: real redis-server, Celery workers and gunicorn that tests kill."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from deploy.probes import free_port
from deploy.stack import Process, Stack

#: The scripted models every reliability stack serves: ``default`` streams slowly enough to
#: be killed mid-way, ``fast`` as fast as it can.
MODELS_TOML = """
[models.default]
provider = "scripted"
[models.default.options]
tokens_per_second = 25
text = "one two three four five six seven eight nine ten eleven twelve "

[models.fast]
provider = "scripted"
[models.fast.options]
text = "alpha beta gamma delta "

[models.failing]
provider = "scripted"
[models.failing.options]
text = "one two three four "
fail_after = 3

[models.wordy]
provider = "scripted"
[models.wordy.options]
text = "%s "
""" % ("x" * 600)


class Fault:
    """A stack under test: its processes, its API URL(s) and a Redis client."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        models = tmp / "models.toml"
        models.write_text(MODELS_TOML)
        base = {
            "SLUICE_MODELS_FILE": str(models),
            "SLUICE_PING_INTERVAL_SECONDS": "0.5",
            "SLUICE_LOG_JSON": "false",
            "SLUICE_LOCK_LEASE_SECONDS": "2",
        }
        self.stack = Stack(tmp, env={**base, **env})
        self.redis_port = free_port()
        self.stack.start_redis(port=self.redis_port, persistent=True)
        self.redis = redis.Redis.from_url(self.stack.env["SLUICE_REDIS_URL"], decode_responses=True)
        self.workers: list[Process] = []
        self.api = ""

    def worker(self, name: str, *, pool: str = "prefork", concurrency: int = 1, **env: str) -> Process:
        """Start one more Celery worker."""
        process = self.stack.start_worker(
            f"{name}-{os.getpid()}", pool=pool, concurrency=concurrency, env=env
        )
        self.workers.append(process)
        return process

    def start_api(self, **env: str) -> str:
        """Start one more gunicorn API process; the first becomes ``self.api``."""
        url = self.stack.start_api(env=env)
        self.api = self.api or url
        return url

    def stop(self) -> None:
        self.redis.close()
        self.stack.stop()


def stacks(tmp_path: Path, base: dict[str, str] | None = None) -> Iterator[Callable[..., Fault]]:
    """A maker of stacks under ``tmp_path`` (each with ``base`` under its own env), all stopped after."""
    made: list[Fault] = []

    def make(**env: str) -> Fault:
        created = Fault(tmp_path / f"stack{len(made)}", {**(base or {}), **env})
        made.append(created)
        return created

    yield make
    for created in made:
        created.stop()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Fault]]:
    """A fresh stack per test (redis only; the test starts workers and APIs)."""
    yield from stacks(tmp_path)
