"""A local Sentinel-managed Redis: one primary, its replicas and three sentinels on loopback.

Started by ``make run`` with ``SLUICE_REDIS_HA=1`` and by the failover tests. Each node is a
plain ``redis-server``; each sentinel is ``redis-server <conf> --sentinel`` with a config
file of its own (a sentinel rewrites it as it learns the topology).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import redis

from deploy.probes import free_port, port_open, wait_for
from deploy.stack import Process, Stack

#: The Sentinel name of the primary unless told otherwise (``SLUICE_REDIS_SENTINEL_MASTER``).
MASTER_NAME = "sluice"


@dataclass
class Topology:
    """The processes of a Sentinel-managed Redis and where they listen."""

    master_name: str
    password: str | None
    nodes: dict[int, Process] = field(default_factory=dict)
    sentinels: dict[int, Process] = field(default_factory=dict)

    @property
    def sentinel_addresses(self) -> str:
        """``SLUICE_REDIS_SENTINELS``: ``127.0.0.1:<port>,...``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinels)

    def sentinel_client(self, port: int | None = None) -> redis.Redis:
        """A client of one sentinel (the first by default)."""
        return redis.Redis(
            port=port or next(iter(self.sentinels)),
            password=self.password,
            decode_responses=True,
            socket_timeout=2,
        )

    def primary_port(self) -> int:
        """The port of the primary as the first sentinel sees it now."""
        with self.sentinel_client() as client:
            _, port = client.sentinel_get_master_addr_by_name(self.master_name)
        return int(port)

    def node_client(self, port: int) -> redis.Redis:
        """A client of one Redis node."""
        return redis.Redis(port=port, password=self.password, decode_responses=True, socket_timeout=2)

    def wait_settled(self, replicas: int, timeout: float = 60) -> None:
        """Until every sentinel agrees on the primary, sees ``replicas`` live replicas of it and
        every other sentinel: a failover can then happen (quorum reached, a replica to promote)."""

        def settled() -> bool:
            primaries = set()
            for port in self.sentinels:
                with self.sentinel_client(port) as client:
                    primaries.add(tuple(client.sentinel_get_master_addr_by_name(self.master_name)))
                    live = [
                        r
                        for r in client.sentinel_slaves(self.master_name)
                        if "s_down" not in r["flags"] and r.get("master-link-status") == "ok"
                    ]
                    others = client.sentinel_sentinels(self.master_name)
                    if len(live) < replicas or len(others) < len(self.sentinels) - 1:
                        return False
            return len(primaries) == 1

        wait_for(settled, timeout, "the sentinels to agree on the Redis topology", interval=0.2)


def start_topology(
    stack: Stack,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    master_name: str = MASTER_NAME,
    password: str | None = None,
    down_after_ms: int = 2000,
    failover_timeout_ms: int = 10_000,
    min_replicas_to_write: int = 0,
) -> Topology:
    """Start a primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum: a majority);
    set ``SLUICE_REDIS_SENTINELS`` / ``_SENTINEL_MASTER`` / ``_PASSWORD`` in the stack's env.

    ``min_replicas_to_write`` (on every node, as any may become the primary): a primary that
    cannot reach that many replicas refuses writes, so a primary cut off from the rest stops
    accepting what a failover would then lose. It needs ``replicas`` above it, or the
    promoted replica, alone, refuses every write."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    topology = Topology(master_name, password)
    primary = free_port()
    for index in range(replicas + 1):
        port = primary if index == 0 else free_port()
        data = stack.var_dir / f"redis-ha-{port}"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--min-replicas-to-write", str(min_replicas_to_write),
            "--min-replicas-max-lag", "10",
        ]  # fmt: skip
        if password:
            argv += ["--requirepass", password, "--masterauth", password]
        if index:
            argv += ["--replicaof", "127.0.0.1", str(primary)]
        process = stack.spawn(f"redis-{port}", argv)
        topology.nodes[port] = process
        wait_for(lambda p=port: port_open(p), 20, f"redis-server on {port}")
    quorum = sentinels // 2 + 1
    for _ in range(sentinels):
        port = free_port()
        conf = _sentinel_conf(
            stack.var_dir, port, master_name, primary, quorum, password, down_after_ms, failover_timeout_ms
        )
        process = stack.spawn(f"sentinel-{port}", [server, str(conf), "--sentinel"])
        topology.sentinels[port] = process
        wait_for(lambda p=port: port_open(p), 20, f"sentinel on {port}")
    stack.env["SLUICE_REDIS_SENTINELS"] = topology.sentinel_addresses
    stack.env["SLUICE_REDIS_SENTINEL_MASTER"] = master_name
    if password:
        stack.env["SLUICE_REDIS_PASSWORD"] = password
    stack.env.pop("SLUICE_REDIS_URL", None)
    topology.wait_settled(replicas)
    return topology


def _sentinel_conf(
    folder: Path,
    port: int,
    master_name: str,
    primary: int,
    quorum: int,
    password: str | None,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> Path:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {folder}",
        f"sentinel monitor {master_name} 127.0.0.1 {primary} {quorum}",
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {master_name} 1",
    ]
    if password:
        lines += [f"requirepass {password}", f"sentinel auth-pass {master_name} {password}"]
    path = folder / f"sentinel-{port}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path
