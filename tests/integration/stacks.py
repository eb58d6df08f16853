"""Stacks of scripted models for the ordering, routing, scaling and operations tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from deploy.probes import wait_for
from deploy.stack import ROOT, Stack

#: A slow model on the local (prefork) queue and quick ones on both queues; no real model loads.
SCRIPTED_MODELS = """
[models.blocker]
provider = "scripted"
queue = "sluice.local"
max_output_tokens = 100000
[models.blocker.options]
tokens_per_second = 20

[models.quick]
provider = "scripted"
queue = "sluice.local"
[models.quick.options]
tokens_per_second = 100
text = "one two three"
repeat = false

[models.remote]
provider = "scripted"
queue = "sluice.upstream"
[models.remote.options]
tokens_per_second = 20
text = "a b c d e f g h i j"
repeat = false
"""


@dataclass
class ScriptedStack:
    """A running stack serving ``SCRIPTED_MODELS``."""

    stack: Stack
    api: str
    redis: redis.Redis

    def stop(self) -> None:
        """Stop every process of the stack."""
        self.stack.stop()


def scripted_stack(tmp: Path, **env: str) -> ScriptedStack:
    """redis-server and the API over ``SCRIPTED_MODELS``; the caller starts the workers."""
    models = tmp / "models.toml"
    models.write_text(SCRIPTED_MODELS)
    stack = Stack(
        tmp,
        env={
            "SLUICE_MODELS_FILE": str(models),
            "SLUICE_LOG_JSON": "true",
            "SLUICE_RETENTION_SECONDS": "600",
            **env,
        },
    )
    try:
        stack.start_redis(persistent=False)
        api = stack.start_api()
    except Exception:
        stack.stop()
        raise
    client = redis.Redis.from_url(stack.env["SLUICE_REDIS_URL"], decode_responses=True)
    return ScriptedStack(stack, api, client)


def hostname(name: str) -> str:
    """A worker hostname unique to this test run."""
    return f"{name}-{os.getpid()}"


def wait_workers(api: str, names: list[str], timeout: float = 120) -> None:
    """Until ``/ready`` lists a live worker for each of ``names``."""

    def all_up() -> bool:
        workers = httpx.get(f"{api}/ready", timeout=5).json()["workers"]
        return all(any(w.startswith(name + "@") for w in workers) for name in names)

    wait_for(all_up, timeout, f"workers {names}")


@contextlib.contextmanager
def make_run(tmp: Path, **env: str) -> Iterator[str]:
    """``python -m deploy.run`` (what ``make run`` runs) until it prints ``ready``; yields its output.

    ``SLUICE_*`` variables of the test's own environment are dropped; SIGTERM at the end
    must stop it cleanly.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ.update({"SLUICE_VAR_DIR": str(tmp), **env})
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.run"], cwd=ROOT, env=environ, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines)
        yield "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
