"""Event delivery latency and fan-out: the worker's append → bytes at SSE observers, one API process.

The appender here is the worker's own write path (``MessageStore.append``, the Lua call the
generation loop makes per token) on a message it claimed, paced like a scripted provider;
it notes the clock right before each call. Observers run in child processes on raw sockets and
note when each delta's bytes arrive. ``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for
every process of the machine, so the two sides compare directly.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis

from bench.client import frame_event, frame_id, host_port, text_seq
from bench.common import Metric, Options, bench_stack, log, percentile, wait_until, write_result
from shared import events as ev
from shared.store import COMPLETED, MessageStore
from shared.streams.reads import StreamReads

START_MARK = b"event: content_block_start"


def _observe(api: str, message_id: str, count: int, ready: Any, results: Any) -> None:
    """Child process: ``count`` SSE observers; report readiness, then what each one got.

    One epoll loop over raw sockets that only notes when bytes arrive (``perf_counter`` per
    read) until every connection has ended; the frames are parsed afterwards, so the
    client's own cost per event is one ``recv`` per observer and no parsing.
    """
    host, port = host_port(api)
    request = (
        f"GET /v1/messages/async/{message_id}/stream HTTP/1.0\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    poller = select.epoll()
    socks: dict[int, socket.socket] = {}
    reads: dict[int, list[tuple[float, bytes]]] = {}
    for _ in range(count):
        sock = socket.create_connection((host, port))
        sock.sendall(request)
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        reads[sock.fileno()] = []
        poller.register(sock.fileno(), select.EPOLLIN)
    waiting = set(socks)  # no content_block_start yet
    open_fds = set(socks)
    deadline = time.monotonic() + 600
    clock = time.perf_counter
    while open_fds and time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            sock = socks[fd]
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            if data:
                reads[fd].append((clock(), data))
                if fd in waiting and START_MARK in b"".join(d for _, d in reads[fd]):
                    waiting.discard(fd)
                    if not waiting:
                        ready.put(True)
                continue
            poller.unregister(fd)
            sock.close()
            open_fds.discard(fd)
    poller.close()
    results.put([_recorded(reads[fd]) for fd in socks])


def _recorded(reads: list[tuple[float, bytes]]) -> tuple[str, int, dict[int, float]]:
    """(hash of the event ids in order, how many, arrival time per text delta) of one SSE response."""
    ids: list[str] = []
    seen: dict[int, float] = {}
    buffer = b""
    head_done = False
    for now, data in reads:
        buffer += data
        if not head_done:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if not sep:
                continue
            if head.split(b" ", 2)[1] != b"200":
                raise RuntimeError(f"stream: {head[:80]!r}")
            head_done, buffer = True, rest
        *complete, buffer = buffer.split(b"\n\n")
        for raw in complete:
            event_id = frame_id(raw)
            if event_id is None:
                continue
            ids.append(event_id)
            if frame_event(raw) == "content_block_delta":
                seq = text_seq(raw)
                if seq is not None:
                    seen[seq] = now
    return hashlib.sha1(" ".join(ids).encode()).hexdigest(), len(ids), seen


@dataclass
class Round:
    """What one delivery round measured."""

    lags_ms: list[float]
    complete: bool
    observers: int
    held_connections: int
    tails: int


def _api_connections(client: redis.Redis) -> tuple[int, int]:
    """Connections the API holds, by client name: (all ``sluice-api*``, tails only)."""
    names = [c.get("name", "") for c in client.client_list()]
    return sum(n.startswith("sluice-api") for n in names), sum(n == "sluice-api-tail" for n in names)


def delivery_round(
    api: str, client: redis.Redis, message_id: str, *, observers: int, events: int, rate: float, procs: int
) -> Round:
    """Start ``observers`` (over ``procs`` processes), append ``events`` deltas at ``rate``/s, measure."""
    store = MessageStore(client, retention_seconds=600)
    assert store.create(message_id, {"messages": []}, {"model": "scripted"})
    store.claim(message_id, "bench", owner="bench", lease_ms=600_000, max_resumes=0)
    store.append(
        message_id, [ev.message_start(message_id, "scripted", 1), ev.content_block_start(0, ev.text_block())]
    )
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    shares = [observers // procs + (1 if i < observers % procs else 0) for i in range(procs)]
    children = [ctx.Process(target=_observe, args=(api, message_id, n, ready, results)) for n in shares if n]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    sent: dict[int, float] = {}
    interval = 1.0 / rate
    next_at = time.perf_counter()
    held = tails = 0
    for seq in range(events):
        next_at += interval
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent[seq] = time.perf_counter()
        store.append(message_id, [ev.text_delta(0, f"#{seq} tok")])
        if seq == events // 2:
            held, tails = _api_connections(client)
    store.finish(
        message_id,
        COMPLETED,
        [ev.content_block_stop(0), ev.message_delta("end_turn", None, events), ev.message_stop()],
    )
    reports = [r for _ in children for r in results.get(timeout=300)]
    for child in children:
        child.join(30)
    stored = [item.id for item in StreamReads(client).replay(message_id)]
    digest = hashlib.sha1(" ".join(stored).encode()).hexdigest()
    complete = all(d == digest and n == len(stored) for d, n, _ in reports)
    lags = [(seen[seq] - sent[seq]) * 1000 for _, _, seen in reports for seq in seen]
    complete = complete and all(len(seen) == events for _, _, seen in reports)
    return Round(lags, complete, len(reports), held, tails)


def _sample(values: list[float], limit: int = 2000) -> list[float]:
    ordered = sorted(values)
    step = max(1, len(ordered) // limit)
    return [round(v, 3) for v in ordered[::step]]


def run(options: Options) -> list[Metric]:
    """Delivery latency to one observer at 1,000 events/s, then fan-out to 1,000 observers."""
    d50 = Metric("event delivery p50 (append → SSE bytes, 1,000 events/s)", "ms", "≤ 1 ms", lambda v: v <= 1)
    d99 = Metric("event delivery p99", "ms", "≤ 5 ms", lambda v: v <= 5)
    fan_ok = Metric("fan-out: every observer got every event (1 = yes)", "bool", "1", lambda v: v == 1)
    f50 = Metric("fan-out lag p50 (1,000 observers)", "ms")
    f99 = Metric("fan-out lag p99 (1,000 observers)", "ms", "≤ 50 ms", lambda v: v <= 50)
    conns = Metric("fan-out: Redis connections held by the API", "count", "≤ 4", lambda v: v <= 4)
    observers = 1000
    fan_events = options.pick(40, 100)
    fan_rate = 20.0
    delivery_events = options.pick(1000, 3000)
    samples: dict[str, list[float]] = {}
    with bench_stack("delivery") as st:
        for repeat in range(options.repeats):
            one = delivery_round(
                st.api, st.redis, f"deliver-{repeat}", observers=1, events=delivery_events, rate=1000, procs=1
            )
            d50.add(percentile(one.lags_ms, 50))
            d99.add(percentile(one.lags_ms, 99))
            samples["delivery"] = _sample(one.lags_ms)
            log(
                f"delivery: repeat {repeat + 1}: p50 {d50.values[-1]:.2f} ms, "
                f"p99 {d99.values[-1]:.2f} ms, complete {one.complete}"
            )
            wait_until(lambda: _api_connections(st.redis)[1] == 0, 30, "the tail to stop")
            fan = delivery_round(
                st.api,
                st.redis,
                f"fan-{repeat}",
                observers=observers,
                events=fan_events,
                rate=fan_rate,
                procs=2,
            )
            fan_ok.add(1 if fan.complete and fan.observers == observers else 0)
            f50.add(percentile(fan.lags_ms, 50))
            f99.add(percentile(fan.lags_ms, 99))
            conns.add(fan.held_connections)
            samples["fanout"] = _sample(fan.lags_ms)
            log(
                f"fan-out: repeat {repeat + 1}: {fan.observers} observers, complete {fan.complete}, "
                f"p50 {f50.values[-1]:.1f} ms, "
                f"p99 {f99.values[-1]:.1f} ms, API connections {fan.held_connections} (tails {fan.tails})"
            )
    metrics = [d50, d99, fan_ok, f50, f99, conns]
    extra = {
        "delivery_events": delivery_events,
        "fanout": {"observers": observers, "events": fan_events, "rate_per_s": fan_rate},
        "samples_ms": samples,
    }
    write_result("delivery", options, metrics, extra)
    return metrics
