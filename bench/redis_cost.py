"""What a message costs Redis, and what the coalescing window buys: bytes, appends, worker speed.

For each window (``SLUICE_COALESCE_MS``) a worker of its own runs the scripted model:
flat out (the loop's own ceiling, where every append is pure overhead), and at 1,000
tokens/s (a fast real model), whose stored size per 1,000-token message is reported.
"""

from __future__ import annotations

from typing import Any

import httpx
import redis

from bench.common import Metric, Options, bench_stack, log, wait_until, write_result
from shared.keys import message_keys

WINDOWS_MS = (0, 5, 20)


def _run_message(api: str, client: redis.Redis, model: str, max_tokens: int) -> tuple[str, dict[str, str]]:
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Go."}]}
    message_id = httpx.post(f"{api}/v1/messages/async", json=body, timeout=30).json()["message_id"]
    status_key = message_keys(message_id).status
    wait_until(lambda: client.hget(status_key, "status") == "completed", 120, f"{message_id} to complete")
    return message_id, client.hgetall(status_key)


def _bytes(client: redis.Redis, message_id: str) -> dict[str, int]:
    keys = message_keys(message_id)
    sizes = {}
    for name, key in (("events", keys.events), ("status", keys.status), ("request", keys.request)):
        sizes[name] = int(client.memory_usage(key, samples=0) or 0)
    return sizes


def run(options: Options) -> list[Metric]:
    """Per window: bytes per message and per delta, entries per message, flat-out tokens/s."""
    metrics: list[Metric] = []
    per_delta = Metric(
        "Redis bytes per stored text delta (no coalescing)", "B", "≤ 120 B", lambda v: v <= 120
    )
    metrics.append(per_delta)
    details: dict[str, Any] = {}
    flat_tokens = options.pick(2000, 5000)
    with bench_stack("redis-cost") as st:
        for window in WINDOWS_MS:
            size = Metric(f"Redis bytes per 1,000-token message, 1,000 tok/s, window {window} ms", "B")
            entries = Metric(f"stream entries per 1,000-token message, window {window} ms", "entries")
            speed = Metric(f"worker ceiling, scripted flat out, window {window} ms", "tok/s")
            metrics += [size, entries, speed]
            worker = st.stack.start_worker(
                f"cost{window}",
                queues="sluice.bench",
                pool="threads",
                concurrency=1,
                env={"SLUICE_COALESCE_MS": str(window), "SLUICE_PRELOAD": "0"},
            )
            for repeat in range(options.repeats):
                small, _ = _run_message(st.api, st.redis, "scripted-1k", 1000)
                sizes = _bytes(st.redis, small)
                size.add(sum(sizes.values()))
                entries.add(st.redis.xlen(message_keys(small).events))
                _, status = _run_message(st.api, st.redis, "scripted", flat_tokens)
                speed.add(float(status["output_tokens"]) / (float(status["duration_ms"]) / 1000))
                if window == 0:
                    big, _ = _run_message(st.api, st.redis, "scripted-1k", 2000)
                    grown = _bytes(st.redis, big)["events"] - sizes["events"]
                    per_delta.add(grown / 1000)
                    details["events_bytes_1000"] = sizes
                log(
                    f"redis-cost: window {window} ms, repeat {repeat + 1}: {size.values[-1]:.0f} B, "
                    f"{entries.values[-1]:.0f} entries, flat out {speed.values[-1]:.0f} tok/s"
                )
            worker.stop()
            st.stack.processes.remove(worker)

    write_result("redis_cost", options, metrics, {"windows_ms": list(WINDOWS_MS), **details})
    return metrics
