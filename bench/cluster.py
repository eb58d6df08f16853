"""The message store on Redis Cluster: append and observer-read throughput with 1, 2 and 3 primaries.

Same workload for each cluster size (no replicas; a control redis-server beside it):

- **append**: ``CLIENTS`` client processes, each with its own ``ClusterMessageStore``, append one
  text delta per call to its own ``STREAMS`` processing messages (ids spread over every slot),
  the worker's own write path (the append script, its lease renewal and wake ``SPUBLISH``), sent
  in batches of ``PIPELINE`` calls, one pipeline per node (one round trip each), as many
  workers would;
- **observer reads**: the same processes read those streams as the cluster tail readers do
  after a wake (``queue_tail_read``: ``XREAD`` of the stream's entries, ``READ_ENTRIES`` of them
  here, plus the status check), pipelined likewise.

Figures, for each size: operations per second summed over the clients (8 s each, 3 quick), and
the **ceiling**: the rate at which the busiest primary would be saturated, i.e. operations ÷
that primary's main-thread CPU seconds during the run (``INFO cpu``). On this 2-core box the
clients and every primary share the two cores, so the measured rate cannot grow with primaries
(the clients are the bottleneck); the ceiling shows how the store's work spreads over them, which
is what a cluster on more cores or hosts buys (docs/SCALING.md).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from typing import Any

from bench.common import VAR, Metric, Options, log, write_result
from deploy.redis_cluster import ClusterTopology, start_cluster
from deploy.stack import Stack
from shared import events as ev
from shared.keys import message_keys
from shared.settings import Settings
from shared.store.cluster import ClusterMessageStore, store_for
from shared.store.cluster_end_scripts import WakingAppendScript
from shared.streams.cluster import queue_tail_read
from shared.streams.reads import StreamReads

#: Client processes (one per core).
CLIENTS = 2
#: Messages each client writes and reads.
STREAMS = 64
#: Calls per pipeline.
PIPELINE = 64
#: Entries an observer read returns (a wake's worth).
READ_ENTRIES = 4
#: Primaries measured.
SIZES = (1, 2, 3)


def _store(settings: Settings) -> ClusterMessageStore:
    import redis

    control = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    store = store_for(settings, control, "bench-cluster", retention_seconds=600, stream_maxlen=1000)
    assert isinstance(store, ClusterMessageStore)
    return store


def _prepare(settings: Settings, client: int) -> list[str]:
    """``STREAMS`` claimed messages of this client, with a few entries each."""
    store = _store(settings)
    ids = [f"msg_bench_{client}_{index}" for index in range(STREAMS)]
    for message_id in ids:
        store.create(message_id, {"model": "scripted"}, {"model": "scripted"})
        store.claim(message_id, "bench", owner="bench", lease_ms=600_000, max_resumes=1)
        store.append(message_id, [ev.text_delta(0, "x")] * READ_ENTRIES, owner="bench", lease_ms=600_000)
    return ids


def _entry_before_last(store: ClusterMessageStore, message_id: str) -> str:
    """The id after which a read returns the stream's last ``READ_ENTRIES`` entries (a wake's worth)."""
    events = StreamReads(store.messages).replay(message_id)
    return events[-READ_ENTRIES - 1].id if len(events) > READ_ENTRIES else "0-0"


def _client(settings: Settings, client: int, kind: str, seconds: float, start: Any, out: Any) -> None:
    """Run ``kind`` (append | read) on this client's streams for ``seconds``; put ops done."""
    store = _store(settings)
    ids = [f"msg_bench_{client}_{index}" for index in range(STREAMS)]
    delta = [ev.encode(ev.text_delta(0, "token "))]
    entry_before_last = {message_id: _entry_before_last(store, message_id) for message_id in ids}
    start.wait()
    done = 0
    deadline = time.perf_counter() + seconds
    position = 0
    sha = hashlib.sha1(WakingAppendScript.source().encode()).hexdigest()  # (loaded by _prepare)
    nodes = {
        message_id: store.messages.get_node_from_key(message_keys(message_id).status) for message_id in ids
    }
    while time.perf_counter() < deadline:
        # One pipeline per node (redis-py's cluster pipeline refuses EVALSHA): one round trip each.
        pipes: dict[str, Any] = {}
        for _ in range(PIPELINE):
            message_id = ids[position % STREAMS]
            position += 1
            node = nodes[message_id]
            pipe = pipes.get(node.name)
            if pipe is None:
                pipe = pipes[node.name] = store.messages.get_redis_connection(node).pipeline(
                    transaction=False
                )
            keys = message_keys(message_id)
            if kind == "append":
                call = WakingAppendScript(
                    status_key=keys.status,
                    events_key=keys.events,
                    cancel_key=keys.cancel,
                    lock_key=keys.lock,
                    ttl=600,
                    maxlen=1000,
                    owner="bench",
                    lease_ms=600_000,
                    events=delta,
                    wake_channel=keys.wake,
                )
                call_keys = call.keys()
                pipe.execute_command("EVALSHA", sha, len(call_keys), *call_keys, *call.args())
            else:
                queue_tail_read(pipe, message_id, entry_before_last[message_id])
        for pipe in pipes.values():
            pipe.execute()
        done += PIPELINE
    out.put(done)


def _main_thread_cpu(topology: ClusterTopology) -> dict[int, float]:
    """Each primary's main-thread CPU seconds so far (user + system)."""
    found = {}
    for port in topology.primaries():
        with topology.node_client(port) as client:
            cpu = client.info("cpu")
        found[port] = float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
    return found


def _measure(settings: Settings, topology: ClusterTopology, kind: str, seconds: float) -> tuple[float, float]:
    """Operations per second of ``kind`` summed over ``CLIENTS`` processes, and the rate at which
    the busiest primary would be saturated (operations ÷ that primary's main-thread CPU seconds)."""
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=_client, args=(settings, index, kind, seconds, start, out))
        for index in range(CLIENTS)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # (the processes import and connect before the clock starts)
    before = _main_thread_cpu(topology)
    start.set()
    total = sum(out.get(timeout=seconds + 60) for _ in workers)
    after = _main_thread_cpu(topology)
    for worker in workers:
        worker.join(10)
    busiest = max(after[port] - before[port] for port in after)
    return total / seconds, total / busiest if busiest > 0 else float("nan")


def _plural(size: int) -> str:
    return f"{size} primar{'y' if size == 1 else 'ies'}"


def run(options: Options) -> None:
    """Measure each cluster size; write ``bench/results/cluster.json``."""
    seconds = options.pick(3.0, 8.0)
    metrics: dict[str, Metric] = {}
    for size in SIZES:
        for kind, label in (("append", "appends/s"), ("read", "observer reads/s")):
            metrics[f"{kind} {size}"] = Metric(f"{label}, {_plural(size)} (2 client processes)", "ops/s")
            metrics[f"{kind} ceiling {size}"] = Metric(
                f"{label} at which the busiest of {_plural(size)} saturates", "ops/s"
            )
    for repeat in range(options.repeats):
        for size in SIZES:
            var = VAR / f"cluster-{size}-{os.getpid()}-{time.monotonic_ns()}"
            stack = Stack(var)
            try:
                control = stack.start_redis(persistent=False)
                topology = start_cluster(stack, primaries=size, replicas=0)
                settings = Settings(redis_url=control, store_cluster_nodes=topology.addresses)
                for client in range(CLIENTS):
                    _prepare(settings, client)
                for kind in ("append", "read"):
                    value, ceiling = _measure(settings, topology, kind, seconds)
                    metrics[f"{kind} {size}"].add(value)
                    metrics[f"{kind} ceiling {size}"].add(ceiling)
                    rates = f"{value:,.0f}/s, ceiling {ceiling:,.0f}/s"
                    log(f"cluster {repeat + 1}: {_plural(size)}, {kind} {rates}")
            finally:
                stack.stop()
    ratio_metrics = []
    for kind in ("append", "read"):
        for what in ("", "ceiling "):
            one = metrics[f"{kind} {what}1"].summary()["median"]
            three = metrics[f"{kind} {what}3"].summary()["median"]
            metric = Metric(f"{kind} {what or 'measured '}3 primaries / 1 primary", "x")
            metric.add(three / one if one else float("nan"))
            ratio_metrics.append(metric)
    extra = {"clients": CLIENTS, "streams_per_client": STREAMS, "pipeline": PIPELINE, "seconds": seconds}
    write_result("cluster", options, [*metrics.values(), *ratio_metrics], extra)
