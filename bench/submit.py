"""Submit latency and throughput: ``POST /v1/messages/async`` from 50 keep-alive clients, one API process."""

from __future__ import annotations

import asyncio
import time

from bench.client import KeepAlive, host_port, post_request
from bench.common import Metric, Options, bench_stack, log, percentile, write_result

CLIENTS = 50
BODY = {
    "model": "scripted",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say something short."}],
}


async def _load(api: str, clients: int, total: int) -> tuple[list[float], float, int]:
    """``total`` submits over ``clients`` connections; returns latencies, wall time and failures."""
    host, port = host_port(api)
    request = post_request(host, port, "/v1/messages/async", BODY)
    conns = [KeepAlive(host, port, request) for _ in range(clients)]
    left = total

    async def client(conn: KeepAlive) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await conn.send()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    latencies = [x for c in conns for x in c.latencies]
    return latencies, elapsed, sum(c.failures for c in conns)


def run(options: Options) -> list[Metric]:
    """Median p50/p99 latency and throughput over the repeats; no worker drains the queue meanwhile."""
    total = options.pick(2000, 6000)
    p50 = Metric("submit latency p50 (50 concurrent clients)", "ms", "≤ 2 ms", lambda v: v <= 2)
    p99 = Metric("submit latency p99 (50 concurrent clients)", "ms", "≤ 10 ms", lambda v: v <= 10)
    rate = Metric("submit throughput (one API process)", "req/s", "≥ 1,500/s", lambda v: v >= 1500)
    failures = Metric("submit failures", "count", "0", lambda v: v == 0)
    with bench_stack("submit") as st:
        asyncio.run(_load(st.api, CLIENTS, 300))  # warm-up: connections, imports, Lua script cache
        for repeat in range(options.repeats):
            latencies, elapsed, failed = asyncio.run(_load(st.api, CLIENTS, total))
            p50.add(percentile(latencies, 50) * 1000)
            p99.add(percentile(latencies, 99) * 1000)
            rate.add(len(latencies) / elapsed)
            failures.add(failed)
            log(
                f"submit: repeat {repeat + 1}: {len(latencies) / elapsed:.0f}/s, "
                f"p50 {p50.values[-1]:.2f} ms, p99 {p99.values[-1]:.2f} ms, {failed} failed"
            )
    metrics = [p50, p99, rate, failures]
    write_result("submit", options, metrics, {"clients": CLIENTS, "requests_per_repeat": total})
    return metrics
