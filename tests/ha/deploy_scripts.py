"""Runs deploy/'s Sentinel start scripts for real, inside the private namespaces
``test_deploy_scripts.py`` makes: ``python -m tests.ha.deploy_scripts <plan.json>``.

Each "host" of the plan (a compose service or a pod) has its own loopback address under its
name in a private ``/etc/hosts``, so the scripts run unchanged on their fixed ports (6379,
26379) with real ``redis-server`` nodes and sentinels. The primary is killed; what the
sentinels, a Sluice client and the restarted node then show is printed as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from shared.redis_client import redis_client
from shared.settings import load_settings


def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Hosts:
    """The plan's processes: started by their start script, killed by process group."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.work = Path(plan["work"])
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        """Run ``name``'s start script with its environment (its data folder in place of /data)."""
        host = self.plan["hosts"][name]
        data = self.work / name
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **host["env"],
            "REDISCLI_AUTH": self.plan["password"],
            "BIND": host["ip"],
            "DATA": str(data),
            "PATH": f"{self.plan['shims']}:{os.environ['PATH']}",
        }
        log = (self.work / f"{name}.log").open("ab")
        script = host["script"].replace("/data", str(data))
        self.running[name] = subprocess.Popen(
            ["sh", "-c", script], env=env, stdout=log, stderr=log, start_new_session=True
        )

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s process group (a crash, not a shutdown)."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def client(self, name: str, port: int) -> redis.Redis:
        """A client of one host."""
        return redis.Redis(
            host=name, port=port, password=self.plan["password"], decode_responses=True, socket_timeout=2
        )

    def stop(self) -> None:
        """Kill whatever still runs."""
        for name in list(self.running):
            self.kill(name)


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Start the topology, kill the primary, restart it; what each step showed."""
    hosts = Hosts(plan)
    first, second = plan["nodes"]
    sentinels = plan["sentinels"]
    try:
        hosts.start(first)
        wait(lambda: hosts.client(first, 6379).ping(), 30, f"{first} to answer")
        hosts.start(second)
        for name in sentinels:
            hosts.start(name)

        def settled() -> bool:
            for name in sentinels:
                client = hosts.client(name, 26379)
                if client.sentinel_get_master_addr_by_name("sluice")[0] != first:
                    return False
                linked = [r for r in client.sentinel_slaves("sluice") if r.get("master-link-status") == "ok"]
                if not linked or len(client.sentinel_sentinels("sluice")) < len(sentinels) - 1:
                    return False
            return True

        wait(settled, 60, "the sentinels to agree on the first primary")
        settings = load_settings(
            {
                "SLUICE_REDIS_SENTINELS": ",".join(f"{name}:26379" for name in sentinels),
                "SLUICE_REDIS_PASSWORD": plan["password"],
            }
        )
        app = redis_client(settings, "deploy-scripts-test")
        app.set("before", "1")
        replicated = app.execute_command("WAIT", 1, 5000)
        hosts.kill(first)
        promoted = wait(
            lambda: (
                hosts.client(sentinels[0], 26379).sentinel_get_master_addr_by_name("sluice")[0] != first
                and hosts.client(sentinels[0], 26379).sentinel_get_master_addr_by_name("sluice")[0]
            ),
            60,
            "a failover",
        )
        wait(lambda: app.set("after", "2"), 30, "a write through the sentinels after the failover")
        kept = app.get("before")
        hosts.start(first)
        # Its role when it first answers: what the start script chose, before any sentinel acts.
        started_as = wait(lambda: hosts.client(first, 6379).info("replication")["role"], 30, f"{first}")

        def rejoined() -> dict[str, Any] | None:
            info = hosts.client(first, 6379).info("replication")
            if info.get("master_link_status") != "up":
                return None
            return dict(info) if hosts.client(first, 6379).get("after") == "2" else None

        info = wait(rejoined, 60, f"{first} to come back as a replica")
        return {
            "replicated": replicated,
            "promoted": promoted,
            "kept": kept,
            "started_as": started_as,
            "returned_role": info["role"],
            "returned_primary": info["master_host"],
        }
    finally:
        hosts.stop()


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
