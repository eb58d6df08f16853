"""`make run` with SLUICE_STORE_CLUSTER=1: a local Redis Cluster for the message store, and a
message served end to end with its keys on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from redis.cluster import ClusterNode, RedisCluster

from deploy.stack import ROOT, free_port, port_open
from shared.keys import message_keys
from tests.reliability.conftest import MODELS_TOML

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_with_store_cluster_starts_a_cluster_and_serves(tmp_path):
    """deploy.run prints the cluster's nodes and 'ready'; a message completes and its keys are on
    the cluster; SIGTERM stops every process, cluster nodes included."""
    api_port = free_port()
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML)
    env = {
        **os.environ,
        "SLUICE_PORT": str(api_port),
        "SLUICE_FLOWER_PORT": str(free_port()),
        "SLUICE_VAR_DIR": str(tmp_path),
        "SLUICE_LOG_JSON": "false",
        "SLUICE_MODELS_FILE": str(models),
        "SLUICE_STORE_CLUSTER": "1",
    }
    for name in ("SLUICE_REDIS_URL", "SLUICE_REDIS_SENTINELS", "SLUICE_STORE_CLUSTER_NODES"):
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
    ports: list[int] = []
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
        store = next(line for line in lines if line.startswith("store:"))
        ports = [int(address.rsplit(":", 1)[1]) for address in store.split()[-1].split(",")]
        assert len(ports) == 6
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
        cluster = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports], decode_responses=True
        )
        assert cluster.hget(message_keys(message_id).status, "status") == "completed"
        cluster.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    assert not port_open(api_port)
    assert not any(port_open(port) for port in ports)
