"""`make run` with SLUICE_REDIS_HA=1: a primary, a replica and three sentinels, and every
component (API, worker, Flower) on the Sentinel-managed primary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from deploy.probes import free_port, port_open
from deploy.stack import ROOT
from tests.reliability.conftest import MODELS_TOML

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_with_ha_starts_a_sentinel_topology_and_serves(tmp_path):
    """deploy.run prints the topology and 'ready'; a message completes; Flower sees the worker
    through the sentinel broker; SIGTERM stops every process, sentinels included."""
    api_port, flower_port = free_port(), free_port()
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML)
    env = {
        **os.environ,
        "SLUICE_PORT": str(api_port),
        "SLUICE_FLOWER_PORT": str(flower_port),
        "SLUICE_VAR_DIR": str(tmp_path),
        "SLUICE_LOG_JSON": "false",
        "SLUICE_MODELS_FILE": str(models),
        "SLUICE_REDIS_HA": "1",
        "FLOWER_UNAUTHENTICATED_API": "1",  # so the test may ask Flower's API which workers it sees
    }
    for name in ("SLUICE_REDIS_URL", "SLUICE_REDIS_SENTINELS"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines)
        topology = next(line for line in lines if line.startswith("redis:"))
        assert "sentinels" in topology and "1 replica" in topology
        api = f"http://127.0.0.1:{api_port}"
        body = {"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        message_id = httpx.post(f"{api}/v1/messages/async", json=body, timeout=10).json()["message_id"]
        deadline = time.monotonic() + 60
        while (
            httpx.get(f"{api}/v1/messages/async/{message_id}/status", timeout=5).json()["status"]
            != "completed"
        ):
            assert time.monotonic() < deadline, "the message did not complete"
            time.sleep(0.1)
        workers = httpx.get(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1", timeout=30)
        assert workers.status_code == 200 and workers.json(), workers.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    assert not port_open(api_port) and not port_open(flower_port)
