"""Scale-out: many concurrent I/O-bound generations over 1, 2 and 4 worker processes.

The ``io`` model is the scripted provider with a per-token delay (an upstream model's
pace); each worker process runs ``--pool threads`` with ``THREADS`` slots, as an
upstream queue would. Throughput = generations completed per second of wall time.
"""

from __future__ import annotations

import asyncio
import time

import redis

from bench.client import KeepAlive, host_port, post_request
from bench.common import Metric, Options, bench_stack, log, wait_until, write_result
from shared.keys import WORKERS, message_keys

PROCESSES = (1, 2, 4)
THREADS = 8
TOKENS = 20  # at the io model's 50 tokens/s: 0.4 s of waiting per generation


async def _submit(api: str, count: int) -> list[str]:
    host, port = host_port(api)
    body = {"model": "io", "max_tokens": TOKENS, "messages": [{"role": "user", "content": "Go."}]}
    conns = [KeepAlive(host, port, post_request(host, port, "/v1/messages/async", body)) for _ in range(20)]
    ids: list[str] = []
    left = count

    async def client(conn: KeepAlive) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            raw = await conn.send()
            ids.append(raw.decode().split('"message_id":"')[1].split('"')[0])

    await asyncio.gather(*(client(c) for c in conns))
    for conn in conns:
        await conn.close()
    return ids


def _completed(client: redis.Redis, ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for message_id in ids:
        pipe.hget(message_keys(message_id).status, "status")
    return sum(status == "completed" for status in pipe.execute())


def run(options: Options) -> list[Metric]:
    """Throughput per process count, and its ratio to one process (linear: 2 and 4)."""
    count = options.pick(100, 200)
    repeats = min(options.repeats, 3)
    rates = {
        n: Metric(f"scale-out: {count} I/O-bound generations, {n} worker process(es)", "gen/s")
        for n in PROCESSES
    }
    ratios = {
        n: Metric(
            f"scale-out: throughput {n} processes ÷ 1 process",
            "ratio",
            f"≈ {n} (≥ {0.85 * n:.1f})",
            lambda v, n=n: v >= 0.85 * n,
        )
        for n in PROCESSES[1:]
    }
    with bench_stack("scale") as st:
        for n in PROCESSES:
            st.redis.delete(WORKERS)
            workers = [
                st.stack.start_worker(
                    f"io{n}-{i}",
                    queues="sluice.bench.io",
                    pool="threads",
                    concurrency=THREADS,
                    env={"SLUICE_PRELOAD": "0"},
                )
                for i in range(n)
            ]
            wait_until(lambda n=n: st.redis.zcard(WORKERS) >= n, 120, f"{n} workers")
            asyncio.run(_submit(st.api, THREADS * n))  # warm-up: every thread has run once
            for repeat in range(repeats):
                started = time.perf_counter()
                ids = asyncio.run(_submit(st.api, count))
                wait_until(
                    lambda ids=ids: _completed(st.redis, ids) == len(ids), 600, "the generations", 0.05
                )
                rates[n].add(count / (time.perf_counter() - started))
                log(f"scale: {n} process(es), repeat {repeat + 1}: {rates[n].values[-1]:.1f} gen/s")
            for worker in workers:
                worker.stop()
                st.stack.processes.remove(worker)
    for n, ratio in ratios.items():
        for one, many in zip(rates[1].values, rates[n].values, strict=True):
            ratio.add(many / one)
    metrics = [*rates.values(), *ratios.values()]
    write_result(
        "scale", options, metrics, {"threads_per_process": THREADS, "tokens": TOKENS, "generations": count}
    )
    return metrics
