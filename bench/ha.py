"""Redis high availability: what ``WAIT`` on the terminal write costs, and how long a failover
keeps submits out, on a local Sentinel topology (one primary, one replica, three sentinels).

- the terminal write (``finish``) timed alone, with ``SLUICE_REDIS_WAIT_MS`` off and on
  (``WAIT 1 <ms>``: until the replica acknowledged it);
- the primary SIGKILLed while a message streams: seconds until a submit is accepted again
  (Sentinel's ``down-after-milliseconds`` is 1,000 here; production configs use more), and
  until the interrupted message completed (resumed after its lease of 2 s lapsed).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx

from bench.common import MODELS_TOML, VAR, Metric, Options, log, wait_until, write_result
from deploy.redis_ha import start_topology
from deploy.stack import Stack
from shared.keys import message_keys
from shared.redis_client import redis_client
from shared.settings import load_settings
from shared.store import MessageStore

#: Sentinel's down-after for the failover measurement (ms).
DOWN_AFTER_MS = 1000
#: ``SLUICE_REDIS_WAIT_MS`` measured against off.
WAIT_MS = 100


def _stack(name: str) -> tuple[Stack, Any]:
    var = VAR / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    var.mkdir(parents=True, exist_ok=True)
    models = var / "models.toml"
    models.write_text(MODELS_TOML)
    env = {
        "SLUICE_MODELS_FILE": str(models),
        "SLUICE_LOG_JSON": "false",
        "SLUICE_LOG_LEVEL": "WARNING",
        "SLUICE_LOCK_LEASE_SECONDS": "2",
        "SLUICE_REDIS_WAIT_MS": str(WAIT_MS),
    }
    stack = Stack(var, env=env)
    topology = start_topology(stack, replicas=1, down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=5000)
    return stack, topology


def _finish_latency(store: MessageStore, wait_ms: int, count: int) -> float:
    """Median µs of one ``finish`` (a small terminal write) with ``wait_ms``."""
    samples = []
    for index in range(count):
        message_id = f"msg_bench_wait_{wait_ms}_{index}"
        store.redis.hset(message_keys(message_id).status, mapping={"status": "processing"})
        started = time.perf_counter()
        store.finish(message_id, "completed", [{"type": "message_stop"}], wait_ms=wait_ms)
        samples.append((time.perf_counter() - started) * 1e6)
        store.redis.delete(*message_keys(message_id).all())
    samples.sort()
    return samples[len(samples) // 2]


def _submit(api: str, model: str, tokens: int) -> httpx.Response:
    body = {"model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": "Go."}]}
    return httpx.post(f"{api}/v1/messages/async", json=body, timeout=10)


def _failover(stack: Stack, topology: Any, client: Any) -> tuple[float, float]:
    """Kill the primary while a message streams; seconds to the first accepted submit and to
    the interrupted message's completion."""
    stack.start_worker("ha1", queues="sluice.bench,sluice.bench.io", pool="prefork", concurrency=1)
    api = stack.start_api()
    stack.wait_ready(api, timeout=120)
    message_id = _submit(api, "io", 200).json()["message_id"]
    key = message_keys(message_id).events
    wait_until(lambda: client.xlen(key) >= 10, 60, "the message to stream")
    port = topology.primary_port()
    topology.nodes[port].signal(signal.SIGKILL)
    killed = time.monotonic()

    def accepted() -> bool:
        try:
            return _submit(api, "io", 1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(accepted, 120, "a submit after the failover", interval=0.05)
    submit_s = time.monotonic() - killed

    def completed() -> bool:
        try:
            return bool(client.hget(message_keys(message_id).status, "status") == "completed")
        except Exception:
            return False

    wait_until(completed, 180, "the interrupted message to complete", interval=0.05)
    return submit_s, time.monotonic() - killed


def run(options: Options) -> list[Metric]:
    """WAIT's cost per terminal write; failover time seen by submits and by a running message."""
    off = Metric("terminal write (finish), WAIT off", "µs")
    on = Metric(f"terminal write (finish), WAIT 1 {WAIT_MS} ms, 1 replica on loopback", "µs")
    submit = Metric(f"primary killed → first submit accepted (down-after {DOWN_AFTER_MS} ms)", "s")
    resumed = Metric("primary killed → the interrupted message completed", "s")
    count = options.pick(200, 1000)
    for repeat in range(options.repeats):
        stack, topology = _stack("ha")
        try:
            settings = load_settings({k: v for k, v in stack.env.items() if k.startswith("SLUICE_")})
            client = redis_client(settings, "bench-ha")
            store = MessageStore(client, retention_seconds=60)
            off.add(_finish_latency(store, 0, count))
            on.add(_finish_latency(store, WAIT_MS, count))
            if repeat < options.pick(1, 3):
                seconds_submit, seconds_done = _failover(stack, topology, client)
                submit.add(seconds_submit)
                resumed.add(seconds_done)
            client.close()
        finally:
            stack.stop()
        log(f"ha repeat {repeat + 1}: finish {off.values[-1]:.0f} µs / with WAIT {on.values[-1]:.0f} µs")
    metrics = [off, on, submit, resumed]
    write_result("ha", options, metrics, {"wait_ms": WAIT_MS, "down_after_ms": DOWN_AFTER_MS})
    return metrics
