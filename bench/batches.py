"""Message Batches and webhooks: creation cost, fairness, interactive latency beside a batch, webhook delay.

- **create**: ``POST /v1/messages/batches`` with 1,000 / 10,000 / 100,000 requests on a fresh
  API process each: the answer's time, the process's peak RSS (``VmHWM``) and the slowest
  ``/health`` answered meanwhile (polled every 20 ms: the loop is never held for long).
- **fairness**: tenant B's 10-request batch alone, then submitted while tenant A's huge batch
  runs: completion time with ÷ alone (target ≤ 1.5).
- **ttft**: time to the first text delta of interactive ``/v1/messages`` streams, idle and while
  a 10,000-request batch runs with ``SLUICE_BATCH_MAX_INFLIGHT`` one below the worker's slots
  (target <= 1.2 x idle).
- **webhooks**: from a message's ``completed_at`` to its ``message.completed`` POST arriving at
  a local receiver (p50, p99).

The scripted ``io`` model (50 tokens/s) on a thread-pool worker with 4 slots stands in for a
model: each batch request is 10 tokens, about 200 ms.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bench.common import BenchStack, Metric, Options, bench_stack, log, percentile, wait_until, write_result

IO_WORKER = {"hostname": "io", "queues": "sluice.bench.io", "pool": "threads", "concurrency": 4}
HOOK_WORKER = {"hostname": "hooks", "queues": "sluice.webhooks", "pool": "threads", "concurrency": 4}
KEY_A, KEY_B = "bench-tenant-a", "bench-tenant-b"
BATCHES = "/v1/messages/batches"


def _requests(n: int, tokens: int = 10) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "io",
                "max_tokens": tokens,
                "messages": [{"role": "user", "content": f"question number {i}"}],
            },
        }
        for i in range(n)
    ]


def _api_rss_peak_mb(stack: BenchStack) -> float:
    """Peak RSS of the API's gunicorn worker (the child of the master process)."""
    master = next(p for p in stack.stack.processes if p.name.startswith("api-")).popen.pid
    with open(f"/proc/{master}/task/{master}/children") as handle:
        child = int(handle.read().split()[0])
    with open(f"/proc/{child}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def creation(options: Options, metrics: list[Metric]) -> None:
    """Time, peak API memory and the slowest /health during creation, per size."""
    sizes = options.pick((1000, 10_000), (1000, 10_000, 100_000))
    for size in sizes:
        took = Metric(f"create {size:,} requests", "s")
        rss = Metric(f"API peak RSS after {size:,}", "MB")
        health = Metric(f"slowest /health during {size:,}", "ms", "< 500", lambda v: v < 500)
        body = json.dumps({"requests": _requests(size)}).encode()
        with bench_stack(
            f"batch-create-{size}", env={"SLUICE_BATCH_MAX_BODY_BYTES": str(256 << 20)}
        ) as stack:
            for _ in range(1 if size >= 100_000 else min(3, options.repeats)):
                worst, stop = [0.0], threading.Event()

                def ping(
                    api: str = stack.api, worst: list[float] = worst, stop: threading.Event = stop
                ) -> None:
                    with httpx.Client(timeout=60) as client:
                        while not stop.is_set():
                            began = time.perf_counter()
                            client.get(f"{api}/health")
                            worst[0] = max(worst[0], time.perf_counter() - began)
                            time.sleep(0.02)

                pinger = threading.Thread(target=ping)
                pinger.start()
                began = time.perf_counter()
                answer = httpx.post(
                    f"{stack.api}{BATCHES}",
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=600,
                )
                took.add(time.perf_counter() - began)
                stop.set()
                pinger.join()
                assert answer.status_code == 200, answer.text[:500]
                health.add(worst[0] * 1000)
            rss.add(_api_rss_peak_mb(stack))
        log(f"create {size}: {took.values} s, peak RSS {rss.values} MB, worst /health {health.values} ms")
        metrics += [took, rss, health]


def _run_batch(api: str, key: str, requests: list[dict[str, Any]], timeout: float = 600) -> tuple[str, float]:
    """Create a batch and wait for its end; (id, seconds from POST to ended)."""
    headers = {"x-api-key": key}
    began = time.perf_counter()
    created = httpx.post(f"{api}{BATCHES}", json={"requests": requests}, headers=headers, timeout=120).json()
    batch_id = created["id"]

    def ended() -> bool:
        found = httpx.get(f"{api}{BATCHES}/{batch_id}", headers=headers, timeout=10).json()
        return bool(found["processing_status"] == "ended")

    wait_until(ended, timeout, f"batch {batch_id}", interval=0.02)
    return batch_id, time.perf_counter() - began


def fairness(options: Options, metrics: list[Metric]) -> None:
    """Tenant B's small batch alone, then behind tenant A's huge one."""
    ratio = Metric("small batch behind a huge one: time / alone", "x", "<= 1.5", lambda v: v <= 1.5)
    alone_m, with_m = Metric("small batch (10) alone", "s"), Metric("small batch (10) beside a huge one", "s")
    huge = options.pick(2000, 10_000)
    env = {"SLUICE_API_KEYS": f"{KEY_A},{KEY_B}"}
    with bench_stack("batch-fair", workers=[IO_WORKER], env=env) as stack:
        for _ in range(options.repeats):
            _, alone = _run_batch(stack.api, KEY_B, _requests(10))
            big = httpx.post(
                f"{stack.api}{BATCHES}",
                json={"requests": _requests(huge)},
                headers={"x-api-key": KEY_A},
                timeout=120,
            ).json()["id"]
            time.sleep(2.0)  # the huge batch runs steadily (past its head)
            _, beside = _run_batch(stack.api, KEY_B, _requests(10))
            httpx.post(f"{stack.api}{BATCHES}/{big}/cancel", headers={"x-api-key": KEY_A}, timeout=30)
            wait_until(lambda big=big: _ended(stack.api, KEY_A, big), 60, "the huge batch's cancel")
            alone_m.add(alone)
            with_m.add(beside)
            ratio.add(beside / alone)
    log(f"fairness: alone {alone_m.values}, beside {with_m.values}")
    metrics += [alone_m, with_m, ratio]


def _ended(api: str, key: str, batch_id: str) -> bool:
    found = httpx.get(f"{api}{BATCHES}/{batch_id}", headers={"x-api-key": key}, timeout=10).json()
    return bool(found["processing_status"] == "ended")


def _ttft(client: httpx.Client, api: str) -> float:
    """Seconds from POST /v1/messages (stream) to its first text delta."""
    body = {"model": "io", "max_tokens": 3, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    began = time.perf_counter()
    with client.stream("POST", f"{api}/v1/messages", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("event: content_block_delta"):
                return time.perf_counter() - began
    raise RuntimeError("no text delta")


def ttft(options: Options, metrics: list[Metric]) -> None:
    """Interactive TTFT idle and beside a running 10,000-request batch: with
    ``SLUICE_BATCH_MAX_INFLIGHT`` one below the worker's slots, and without a cap."""
    slots = int(IO_WORKER["concurrency"])  # type: ignore[call-overload]
    for cap, label in ((slots - 1, f"cap {slots - 1} of {slots} slots"), (0, "no cap")):
        idle_m = Metric(f"interactive TTFT idle (p50), {label}", "ms")
        busy_m = Metric(f"interactive TTFT beside a 10k batch (p50), {label}", "ms")
        target = ("<= 1.2", lambda v: v <= 1.2) if cap else ("", None)
        ratio = Metric(f"interactive TTFT beside a batch / idle, {label}", "x", *target)
        _ttft_runs(options, cap, idle_m, busy_m, ratio)
        log(f"ttft {label}: idle {idle_m.values} ms, busy {busy_m.values} ms")
        metrics += [idle_m, busy_m, ratio]


def _ttft_runs(options: Options, cap: int, idle_m: Metric, busy_m: Metric, ratio: Metric) -> None:
    samples = options.pick(20, 50)
    env = {"SLUICE_BATCH_MAX_INFLIGHT": str(cap)}
    with bench_stack(f"batch-ttft-{cap}", workers=[IO_WORKER], env=env) as stack, httpx.Client() as client:
        for _ in range(options.repeats):
            idle = [_ttft(client, stack.api) for _ in range(samples)]
            big = httpx.post(
                f"{stack.api}{BATCHES}", json={"requests": _requests(10_000)}, timeout=120
            ).json()["id"]
            time.sleep(1.0)
            busy = []
            for _ in range(samples):
                busy.append(_ttft(client, stack.api))
                time.sleep(0.05)
            httpx.post(f"{stack.api}{BATCHES}/{big}/cancel", timeout=30)
            wait_until(lambda big=big: _ended(stack.api, "", big), 60, "the batch's cancel")
            idle_p50, busy_p50 = statistics.median(idle) * 1000, statistics.median(busy) * 1000
            idle_m.add(idle_p50)
            busy_m.add(busy_p50)
            ratio.add(busy_p50 / idle_p50)


def webhooks(options: Options, metrics: list[Metric]) -> None:
    """Delay from a message's completion to its webhook's arrival."""
    arrived: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = json.loads(self.rfile.read(int(self.headers["content-length"])))
            arrived[data["data"]["id"]] = time.time()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p50, p99 = (
        Metric("webhook delay after completion p50", "ms"),
        Metric("webhook delay after completion p99", "ms"),
    )
    count = options.pick(50, 200)
    env = {"SLUICE_WEBHOOK_ALLOW_PRIVATE": "true"}
    try:
        with bench_stack("batch-hooks", workers=[IO_WORKER, HOOK_WORKER], env=env) as stack:
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            httpx.post(
                f"{stack.api}/v1/webhook_endpoints",
                json={"url": url, "events": ["message.completed"]},
                timeout=10,
            )
            for _ in range(options.repeats):
                arrived.clear()
                ids = []
                for _ in range(count):
                    body = {"model": "io", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
                    ids.append(
                        httpx.post(f"{stack.api}/v1/messages/async", json=body, timeout=10).json()[
                            "message_id"
                        ]
                    )
                    time.sleep(0.02)
                wait_until(lambda ids=ids: all(i in arrived for i in ids), 120, "every webhook")
                delays = []
                for message_id in ids:
                    done = httpx.get(f"{stack.api}/v1/messages/async/{message_id}/status", timeout=10).json()
                    completed = datetime.fromisoformat(
                        done["completed_at"].replace("Z", "+00:00")
                    ).timestamp()
                    delays.append((arrived[message_id] - completed) * 1000)
                p50.add(percentile(delays, 50))
                p99.add(percentile(delays, 99))
    finally:
        server.shutdown()
    log(f"webhooks: p50 {p50.values} ms, p99 {p99.values} ms")
    metrics += [p50, p99]


def run(options: Options) -> None:
    """Every part; the figures go to ``bench/results/batches.json``."""
    metrics: list[Metric] = []
    for part in (creation, fairness, ttft, webhooks):
        part(options, metrics)
    write_result("batches", options, metrics)
