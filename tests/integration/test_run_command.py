"""`make run`'s launcher starts every process, reports ready, and stops them all on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from deploy.probes import free_port, port_open
from deploy.stack import ROOT

pytestmark = pytest.mark.integration


def test_run_starts_the_stack_and_stops_everything_on_sigterm(tmp_path):
    """deploy.run prints 'ready' once /ready is true; SIGTERM leaves no process behind."""
    api_port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "SLUICE_PORT": str(api_port),
        "SLUICE_FLOWER_PORT": str(flower_port),
        "SLUICE_VAR_DIR": str(tmp_path),
        "SLUICE_LOG_JSON": "false",
    }
    env.pop("SLUICE_REDIS_URL", None)
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
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/ready", timeout=5) as response:
            assert response.status == 200
        assert port_open(flower_port)
        assert any(f":{flower_port}" in line for line in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    assert not port_open(api_port) and not port_open(flower_port)
