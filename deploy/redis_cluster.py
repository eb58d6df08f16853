"""A local Redis Cluster on loopback: N primaries, each with its replicas (the message store's home).

Started by ``make run`` with ``SLUICE_STORE_CLUSTER=1``, by the cluster tests and by the cluster
benchmark. Each node is a plain ``redis-server --cluster-enabled yes`` with a cluster config file
of its own; ``redis-cli --cluster create`` joins them and assigns the 16384 slots.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

import redis
from redis.cluster import ClusterNode, RedisCluster

from deploy.stack import Process, Stack, free_port, port_open, wait_for

#: How long a primary may be unreachable before its replicas start a failover (ms).
NODE_TIMEOUT_MS = 2000


@dataclass
class ClusterTopology:
    """The processes of a local Redis Cluster and where they listen."""

    password: str | None
    nodes: dict[int, Process] = field(default_factory=dict)
    #: Each node's cluster bus port, by its port.
    bus_ports: dict[int, int] = field(default_factory=dict)

    @property
    def addresses(self) -> str:
        """``SLUICE_STORE_CLUSTER_NODES``: ``127.0.0.1:<port>,...`` (every node, as seeds)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.nodes)

    def node_client(self, port: int) -> redis.Redis:
        """A plain client of one node."""
        return redis.Redis(port=port, password=self.password, decode_responses=True, socket_timeout=2)

    def cluster_client(self) -> RedisCluster:
        """A cluster client (for tests and benchmarks; Sluice builds its own from settings)."""
        alive = [ClusterNode("127.0.0.1", port) for port, proc in self.nodes.items() if proc.alive()]
        return RedisCluster(startup_nodes=alive, password=self.password, decode_responses=True)

    def primary_of(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot, as a live node sees it now."""
        for port, process in self.nodes.items():
            if not process.alive():
                continue
            with self.node_client(port) as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(primary[1])
        raise RuntimeError("no live cluster node")

    def primaries(self) -> list[int]:
        """The ports of the nodes that are primaries now."""
        found = []
        for port, process in self.nodes.items():
            if process.alive():
                with self.node_client(port) as client:
                    if client.info("replication")["role"] == "master":
                        found.append(port)
        return found

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        self.nodes[port].signal(9)
        self.nodes[port].popen.wait(10)

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every live node reports ``cluster_state:ok`` (every slot served) and every live
        replica is in sync with its primary (so that it can take over)."""

        def ok() -> bool:
            for port, process in self.nodes.items():
                if process.alive():
                    with self.node_client(port) as client:
                        if client.cluster("info")["cluster_state"] != "ok":
                            return False
                        replication = client.info("replication")
                        if replication["role"] == "slave" and replication["master_link_status"] != "up":
                            return False
            return True

        wait_for(ok, timeout, "the Redis Cluster to report cluster_state:ok", interval=0.2)


def start_cluster(
    stack: Stack, *, primaries: int = 3, replicas: int = 1, password: str | None = None
) -> ClusterTopology:
    """Start ``primaries * (1 + replicas)`` cluster nodes, join them, wait until every slot
    is served; set ``SLUICE_STORE_CLUSTER_NODES`` in the stack's env. One primary alone is a
    cluster too (all slots on it), for benchmarks."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    topology = ClusterTopology(password)
    for _ in range(primaries * (1 + replicas)):
        port, bus = free_port(), free_port()
        topology.bus_ports[port] = bus
        data = stack.var_dir / f"redis-cluster-{port}"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus),  # (default: port + 10000, past 65535 for high ports)
            "--cluster-config-file", str(data / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",  # (a replica's first sync starts at once, not after 5 s)
            "--cluster-replica-validity-factor", "0",  # (a replica may always take over)
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if password:
            argv += ["--requirepass", password, "--masterauth", password]
        topology.nodes[port] = stack.spawn(f"redis-cluster-{port}", argv)
        wait_for(lambda p=port: port_open(p), 20, f"redis-server on {port}")
    if primaries >= 3:  # redis-cli's minimum
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in topology.nodes)]
        create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        env = {"REDISCLI_AUTH": password} if password else None
        subprocess.run(create, check=True, capture_output=True, timeout=60, env=env)
    else:
        _join_by_hand(topology, primaries)
    if replicas:
        wait_for(lambda: len(topology.primaries()) == primaries, 60, "the replicas to attach")
    topology.wait_ok()
    stack.env["SLUICE_STORE_CLUSTER_NODES"] = topology.addresses
    if password:
        stack.env["SLUICE_REDIS_PASSWORD"] = password
    return topology


def _join_by_hand(topology: ClusterTopology, primaries: int) -> None:
    """What ``redis-cli --cluster create`` does, for fewer than three primaries: slots split
    evenly, every node met, then each replica attached to its primary."""
    ports = list(topology.nodes)
    heads, tails = ports[:primaries], ports[primaries:]
    per = 16384 // primaries
    for index, port in enumerate(heads):
        end = 16383 if index == primaries - 1 else (index + 1) * per - 1
        with topology.node_client(port) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * per, end)
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
    with topology.node_client(ports[0]) as client:
        for port in ports[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", port, topology.bus_ports[port])

    def all_met() -> bool:
        for port in ports:
            with topology.node_client(port) as client:
                if int(client.cluster("info")["cluster_known_nodes"]) < len(ports):
                    return False
        return True

    wait_for(all_met, 30, "the cluster nodes to meet", interval=0.1)
    for index, port in enumerate(tails):
        with topology.node_client(heads[index % primaries]) as head:
            head_id = head.execute_command("CLUSTER", "MYID")
        with topology.node_client(port) as client:
            client.execute_command("CLUSTER", "REPLICATE", head_id)
