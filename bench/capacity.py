"""The inputs of the capacity model (docs/SCALING.md): what one streaming message costs Redis
and the API, measured in the shape that matters (many concurrent streams at 50 tokens/s).

``concurrent`` generations of the ``io`` model (50 tok/s, the default 25 ms coalescing window)
run on one thread-pool worker, each followed by one SSE observer on one API process. Around
the run: Redis's ``INFO commandstats`` (calls and CPU µs per command) and ``INFO cpu`` (the
server's own CPU, networking included), and the CPU time of the API's and the worker's
processes from ``/proc``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Metric, Options, bench_stack, log, wait_until, write_result
from shared.keys import message_keys

TOKENS = 100
TOKENS_PER_SECOND = 50


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(c) for c in children.read_text().split()]
    for each in pids:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _observe(api: str, message_id: str) -> None:
    with httpx.stream("GET", f"{api}/v1/messages/async/{message_id}/stream", timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("event: message_stop"):
                return


def _redis_totals(client: Any) -> tuple[int, float, float]:
    """(command calls, command CPU µs, server CPU s) so far."""
    stats = client.info("commandstats")
    calls = sum(int(v["calls"]) for v in stats.values())
    usec = sum(float(v["usec"]) for v in stats.values())
    cpu = client.info("cpu")
    return calls, usec, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def _fanout(st: Any, observers: int, repeats: int) -> Metric:
    """API CPU per token per observer when ``observers`` watch one stream (the hub reads it once)."""
    metric = Metric(f"API CPU per token per observer, {observers} observers of one stream", "µs")
    api_pid = next(p.popen.pid for p in st.stack.processes if p.name.startswith("api-"))
    body = {"model": "io", "max_tokens": TOKENS, "messages": [{"role": "user", "content": "Go."}]}
    for _ in range(repeats):
        message_id = httpx.post(f"{st.api}/v1/messages/async", json=body, timeout=30).json()["message_id"]
        before = _cpu_seconds(api_pid)
        threads = [threading.Thread(target=_observe, args=(st.api, message_id)) for _ in range(observers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        metric.add((_cpu_seconds(api_pid) - before) * 1e6 / (TOKENS * observers))
    return metric


def run(options: Options) -> list[Metric]:
    """Per message and per token: Redis calls, Redis CPU, API CPU per observer, worker CPU."""
    concurrent = options.pick(20, 50)
    calls_msg = Metric("Redis commands per 100-token message (submit, run, 1 observer)", "calls")
    usec_token = Metric("Redis command CPU per streamed token (1 observer)", "µs")
    server_token = Metric("Redis server CPU per streamed token (networking included, 1 observer)", "µs")
    api_token = Metric("API CPU per token delivered to one observer (SSE)", "µs")
    worker_token = Metric("worker CPU per token (scripted model: the pipeline's own cost)", "µs")
    bytes_msg = Metric("Redis memory per finished 100-token message (stream + status + request)", "B")
    metrics = [calls_msg, usec_token, server_token, api_token, worker_token, bytes_msg]
    worker = {
        "hostname": "cap",
        "queues": "sluice.bench.io",
        "pool": "threads",
        "concurrency": concurrent,
        "env": {"SLUICE_PRELOAD": "0"},
    }
    per_command: dict[str, Any] = {}
    with bench_stack("capacity", workers=[worker]) as st:
        api_pid = next(p.popen.pid for p in st.stack.processes if p.name.startswith("api-"))
        worker_pid = next(p.popen.pid for p in st.stack.processes if p.name.startswith("worker-"))
        body = {"model": "io", "max_tokens": TOKENS, "messages": [{"role": "user", "content": "Go."}]}
        for repeat in range(options.repeats):
            st.redis.config_resetstat()
            calls0, usec0, cpu0 = _redis_totals(st.redis)
            api0, worker0 = _cpu_seconds(api_pid), _cpu_seconds(worker_pid)
            ids = [
                httpx.post(f"{st.api}/v1/messages/async", json=body, timeout=30).json()["message_id"]
                for _ in range(concurrent)
            ]
            threads = [threading.Thread(target=_observe, args=(st.api, m)) for m in ids]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)

            def done(ids: list[str] = ids) -> bool:
                return all(st.redis.hget(message_keys(m).status, "status") == "completed" for m in ids)

            wait_until(done, 120, "every message to complete")
            time.sleep(0.2)  # let the last commands be counted
            calls1, usec1, cpu1 = _redis_totals(st.redis)
            per_command = {
                name.removeprefix("cmdstat_"): {
                    "calls_per_message": round(int(v["calls"]) / concurrent, 1),
                    "usec_per_message": round(float(v["usec"]) / concurrent, 1),
                }
                for name, v in st.redis.info("commandstats").items()
            }
            tokens = concurrent * TOKENS
            calls_msg.add((calls1 - calls0) / concurrent)
            usec_token.add((usec1 - usec0) / tokens)
            server_token.add((cpu1 - cpu0) * 1e6 / tokens)
            api_token.add((_cpu_seconds(api_pid) - api0) * 1e6 / tokens)
            worker_token.add((_cpu_seconds(worker_pid) - worker0) * 1e6 / tokens)
            keys = message_keys(ids[0])
            bytes_msg.add(
                sum(
                    int(st.redis.memory_usage(k, samples=0) or 0)
                    for k in (keys.events, keys.status, keys.request)
                )
            )
            log(
                f"capacity repeat {repeat + 1}: {calls_msg.values[-1]:.0f} calls/msg, "
                f"{server_token.values[-1]:.1f} µs Redis CPU/token, "
                f"{api_token.values[-1]:.1f} µs API CPU/token"
            )
        fanout = _fanout(st, options.pick(100, 200), options.repeats)
    metrics.append(fanout)
    write_result(
        "capacity",
        options,
        metrics,
        {
            "concurrent": concurrent,
            "tokens": TOKENS,
            "tokens_per_second": TOKENS_PER_SECOND,
            "coalesce_ms": 25,
            "last_run_per_command": per_command,
        },
    )
    return metrics
