"""Submit throughput and latency: ``POST /v1/messages/async`` from 50 keep-alive clients.

Two loads, each against one and against two API processes (``SLUICE_API_WORKERS``):

- **closed loop** (throughput): 50 clients each send their next request as soon as the
  last one is answered; the rate they reach is the most the API sustains. Its latencies
  follow from Little's law (50 in flight at 1,500/s is 33 ms each), so they are reported
  but say nothing about the latency target.
- **open loop** (latency): the 50 connections together offer a fixed rate (1,500/s) on a
  paced schedule, request ``k`` due at ``t0 + k / rate``; latency counts from the due time,
  not from when the client got round to sending, so a slow answer that delays the next send
  on its connection is charged in full (no coordinated omission).

No worker drains the queue meanwhile, so only the API and Redis are measured; Redis is
flushed between repeats so every repeat starts from the same state.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.client import KeepAlive, host_port, post_request
from bench.common import BenchStack, Metric, Options, bench_stack, log, percentile, write_result

CLIENTS = 50
#: The offered rate of the open-loop load (the throughput target).
OFFERED_PER_SECOND = 1500
_SS_LINE = re.compile(r":(?P<peer>\d+)\s+users:\(\(\"[^\"]*\",pid=(?P<pid>\d+)")
BODY = {
    "model": "scripted",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say something short."}],
}


@dataclass
class Run:
    """One load's outcome: latencies (s), the rate reached (req/s) and failed answers."""

    latencies: list[float]
    rate: float
    failures: int


def _serving_pids(port: int) -> dict[int, str]:
    """Client port → pid of the API process that accepted the connection (``ss``, Linux)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        match = _SS_LINE.search(line)
        if match:
            found[int(match["peer"])] = match["pid"]
    return found


async def _connections(api: str, processes: int) -> list[KeepAlive]:
    """``CLIENTS`` open connections, spread evenly over the API processes.

    The processes share one listening socket and whichever is idle accepts, so 50 connections
    opened at once split unevenly (measured 43/7, 4/46, 36/14) and stay so: one process then
    carries most of a keep-alive load. A load balancer or many short-lived clients spread the
    work; here, a connection on a process that has more than its share is replaced (each is
    answered once first, so it has been accepted) until the split is even.
    """
    host, port = host_port(api)
    request = post_request(host, port, "/v1/messages/async", BODY)
    conns: list[KeepAlive] = []
    for _ in range(100):
        fresh = [KeepAlive(host, port, request) for _ in range(CLIENTS - len(conns))]
        await asyncio.gather(*(conn.exchange() for conn in fresh))
        conns += fresh
        if processes == 1:
            return conns
        pids = _serving_pids(port)
        by_pid: dict[str, list[KeepAlive]] = {}
        for conn in conns:
            by_pid.setdefault(pids.get(conn.local_port(), "?"), []).append(conn)
        share = -(-CLIENTS // processes)
        surplus = [c for group in by_pid.values() for c in group[share:]]
        if len(by_pid) == processes and not surplus:
            return conns
        for conn in surplus:
            await conn.close()
            conns.remove(conn)
    raise RuntimeError(f"could not spread {CLIENTS} connections over {processes} API processes")


async def _closed(api: str, total: int, processes: int = 1) -> Run:
    """``total`` submits over ``CLIENTS`` connections, each sending again as soon as answered."""
    conns = await _connections(api, processes)
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
    return Run(latencies, len(latencies) / elapsed, sum(c.failures for c in conns))


async def _open(api: str, rate: float, seconds: float, processes: int = 1) -> Run:
    """``rate`` submits a second for ``seconds``, request ``k`` due at ``t0 + k / rate`` on
    connection ``k mod CLIENTS``; each latency runs from the due time to the whole answer."""
    conns = await _connections(api, processes)  # connected before the clock starts
    total = int(rate * seconds)
    latencies: list[float] = []
    failures = 0
    finished = 0.0
    t0 = time.perf_counter() + 0.05

    async def client(index: int, conn: KeepAlive) -> None:
        nonlocal failures, finished
        for k in range(index, total, CLIENTS):
            due = t0 + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            ok = await conn.exchange()
            done = time.perf_counter()
            latencies.append(done - due)
            failures += not ok
            finished = max(finished, done)

    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    for conn in conns:
        await conn.close()
    return Run(latencies, len(latencies) / (finished - t0), failures)


def _measure(st: BenchStack, options: Options, processes: int, metrics: dict[str, Metric]) -> None:
    """The repeats of both loads against a stack with ``processes`` API processes."""
    total = options.pick(2000, 6000)
    seconds = options.pick(3.0, 6.0)
    asyncio.run(_closed(st.api, 300))  # warm-up: connections, imports, Lua script cache
    for repeat in range(options.repeats):
        st.redis.flushdb()
        closed = asyncio.run(_closed(st.api, total, processes))
        st.redis.flushdb()
        opened = asyncio.run(_open(st.api, OFFERED_PER_SECOND, seconds, processes))
        figures = {
            f"throughput {processes}": closed.rate,
            f"closed p50 {processes}": percentile(closed.latencies, 50) * 1000,
            f"closed p99 {processes}": percentile(closed.latencies, 99) * 1000,
            f"open p50 {processes}": percentile(opened.latencies, 50) * 1000,
            f"open p99 {processes}": percentile(opened.latencies, 99) * 1000,
            f"open rate {processes}": opened.rate,
            f"failures {processes}": closed.failures + opened.failures,
        }
        for name, value in figures.items():
            metrics[name].add(value)
        log(
            f"submit, {processes} API process(es), repeat {repeat + 1}: closed loop {closed.rate:.0f}/s "
            f"(p50 {figures[f'closed p50 {processes}']:.1f} ms); open loop at {OFFERED_PER_SECOND}/s: "
            f"p50 {figures[f'open p50 {processes}']:.2f} ms, p99 {figures[f'open p99 {processes}']:.2f} ms, "
            f"reached {opened.rate:.0f}/s; {figures[f'failures {processes}']:.0f} failed"
        )


def _metrics(processes: int, target_row: bool) -> dict[str, Metric]:
    """The figures of one API-process count; only the target row's figures carry the targets."""
    label = f"{processes} API process{'es' if processes > 1 else ''}"
    offered = f"{OFFERED_PER_SECOND:,}/s offered"
    metrics = {
        f"throughput {processes}": Metric(f"submit throughput (closed loop, 50 clients, {label})", "req/s"),
        f"open p50 {processes}": Metric(f"submit latency p50 (open loop, {offered}, {label})", "ms"),
        f"open p99 {processes}": Metric(f"submit latency p99 (open loop, {offered}, {label})", "ms"),
        f"open rate {processes}": Metric(f"submit rate reached (open loop, {offered}, {label})", "req/s"),
        f"closed p50 {processes}": Metric(f"submit latency p50 (closed loop, 50 clients, {label})", "ms"),
        f"closed p99 {processes}": Metric(f"submit latency p99 (closed loop, 50 clients, {label})", "ms"),
        f"failures {processes}": Metric(f"submit failures ({label})", "count", "0", lambda v: v == 0),
    }
    if target_row:
        targets: dict[str, tuple[str, Callable[[float], bool]]] = {
            "throughput": ("≥ 1,500/s", lambda v: v >= 1500),
            "open p50": ("≤ 2 ms", lambda v: v <= 2),
            "open p99": ("≤ 10 ms", lambda v: v <= 10),
        }
        for name, (text, check) in targets.items():
            metrics[f"{name} {processes}"].target = text
            metrics[f"{name} {processes}"].check = check
    return metrics


def run(options: Options) -> list[Metric]:
    """Closed-loop throughput and open-loop latency, with one and with two API processes.

    The target row is the two-process figure: the machine has two cores, and one gevent
    process uses one of them at most.
    """
    metrics: dict[str, Metric] = {}
    for processes in (1, 2):
        found = _metrics(processes, target_row=processes == 2)
        with bench_stack(f"submit-{processes}", env={"SLUICE_API_WORKERS": str(processes)}) as st:
            _measure(st, options, processes, found)
        metrics.update(found)
    ordered = list(metrics.values())
    write_result(
        "submit",
        options,
        ordered,
        {
            "clients": CLIENTS,
            "closed_loop_requests_per_repeat": options.pick(2000, 6000),
            "open_loop_offered_per_second": OFFERED_PER_SECOND,
            "open_loop_seconds": options.pick(3.0, 6.0),
            "target_row": "2 API processes",
        },
    )
    return ordered
