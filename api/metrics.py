"""``GET /metrics`` and the request instrumentation behind it: counters, latency, SSE, queues.

Request metrics live in prometheus-client's registry (multiprocess-safe when
``PROMETHEUS_MULTIPROC_DIR`` is set for several gunicorn workers). Queue depth and
messages by status are read from Redis at scrape time, so every API process
reports the same honest numbers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.services import Services, services
from shared.keys import STATUS_PATTERN, broker_list
from shared.logging import bind_message, clear_message
from shared.priority import PRIORITY_STEPS
from shared.store import PENDING, PROCESSING, TERMINAL_STATUSES

log = logging.getLogger("sluice.api.access")

#: Counting messages by status scans their hashes; scrapes within this window reuse the count.
STATUS_COUNT_CACHE_SECONDS = 2.0
SUBMIT_ENDPOINT_RULE = "/v1/messages/async"
STATUSES = (PENDING, PROCESSING, *sorted(TERMINAL_STATUSES))
#: Probes and scrapes: their request lines are logged at DEBUG so they do not drown the rest.
QUIET_RULES = frozenset({"/health", "/ready", "/metrics"})

REQUESTS = Counter(
    "sluice_http_requests",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
SUBMIT_LATENCY = Histogram(
    "sluice_submit_latency_seconds",
    "Time to validate, store and queue one async submit (POST /v1/messages/async)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SSE_OPEN = Gauge(
    "sluice_sse_connections_open", "SSE responses being streamed now", multiprocess_mode="livesum"
)


@dataclass
class _StatusCount:
    """Messages by status, counted by a SCAN over status hashes and cached briefly."""

    counted_at: float = float("-inf")
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, svc: Services) -> dict[str, int]:
        with self.lock:
            if time.monotonic() - self.counted_at > STATUS_COUNT_CACHE_SECONDS:
                self.counts = _count_statuses(svc)
                self.counted_at = time.monotonic()
            return dict(self.counts)


def _count_statuses(svc: Services) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    batch: list[str] = []
    for key in svc.redis.scan_iter(match=STATUS_PATTERN, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            _tally(svc, batch, counts)
            batch = []
    _tally(svc, batch, counts)
    return counts


def _tally(svc: Services, keys: list[str], counts: dict[str, int]) -> None:
    if not keys:
        return
    pipe = svc.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "status")
    for value in pipe.execute():
        if value in counts:
            counts[value] += 1


class RedisCollector(Collector):
    """Queue depth per queue and band (every kombu priority list) and messages by status."""

    def __init__(self, svc: Services, status_count: _StatusCount) -> None:
        self.svc = svc
        self.status_count = status_count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "sluice_queue_depth",
            "Messages waiting in the broker, per queue and band",
            labels=["queue", "band"],
        )
        queues = sorted(self.svc.registry.queues())
        pipe = self.svc.redis.pipeline(transaction=False)
        for queue in queues:
            for band in PRIORITY_STEPS:
                pipe.llen(broker_list(queue, band))
        lengths = iter(pipe.execute())
        for queue in queues:
            for band in PRIORITY_STEPS:
                depth.add_metric([queue, str(band)], next(lengths))
        yield depth
        by_status = GaugeMetricFamily("sluice_messages", "Retained messages by status", labels=["status"])
        for status, count in sorted(self.status_count.get(self.svc).items()):
            by_status.add_metric([status], count)
        yield by_status


def metrics_view() -> Response:
    """Prometheus text: this process's (or all processes') request metrics, then Redis gauges."""
    svc = services()
    app_registry = _process_registry()
    redis_registry = CollectorRegistry(auto_describe=False)
    redis_registry.register(RedisCollector(svc, _status_counter()))
    payload = generate_latest(app_registry) + generate_latest(redis_registry)
    return Response(
        payload, mimetype=CONTENT_TYPE_LATEST.split(";")[0], headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _process_registry() -> CollectorRegistry:
    """The default registry, or one summing every gunicorn worker's files in multiprocess mode."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


_STATUS_COUNTS = _StatusCount()


def _status_counter() -> _StatusCount:
    return _STATUS_COUNTS


def _before() -> None:
    g.sluice_started = time.perf_counter()
    view_args = request.view_args or {}
    bind_message(view_args.get("message_id"), request.headers.get("X-Correlation-ID"))


#: Methods that get a label of their own; anything else a client makes up counts as ``other``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label: a known HTTP method, or ``other`` (labels never come from clients)."""
    return method if method in KNOWN_METHODS else "other"


def _after(response: Response) -> Response:
    # The route label is a rule of the route table or "<unmatched>"; the status one is an HTTP
    # status this app answers with: neither can grow with what a client sends.
    rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    elapsed = time.perf_counter() - g.get("sluice_started", time.perf_counter())
    REQUESTS.labels(rule, method_label(request.method), str(response.status_code)).inc()
    if rule == SUBMIT_ENDPOINT_RULE and request.method == "POST":
        SUBMIT_LATENCY.observe(elapsed)
    if response.mimetype == "text/event-stream":
        SSE_OPEN.inc()
        response.call_on_close(SSE_OPEN.dec)
    level = logging.DEBUG if rule in QUIET_RULES else logging.INFO
    if not log.isEnabledFor(level):
        return response
    message_id, correlation_id = _ids_of(response)
    log.log(
        level,
        "request",
        extra={
            "method": method_label(request.method),
            "route": rule,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            **({"message_id": message_id} if message_id else {}),
            **({"correlation_id": correlation_id} if correlation_id else {}),
        },
    )
    return response


def _ids_of(response: Response) -> tuple[str | None, str | None]:
    """The message id and correlation id of a JSON answer or JSON request, when present."""
    message_id: str | None = g.get("sluice_message_id")  # set by a view that knows it
    correlation_id = None
    if message_id is None and response.is_json and not response.is_streamed:
        answer: Any = response.get_json(silent=True)
        if isinstance(answer, dict) and isinstance(answer.get("message_id"), str):
            message_id = answer["message_id"]
            metadata = answer.get("metadata")
            if isinstance(metadata, dict) and isinstance(metadata.get("correlation_id"), str):
                correlation_id = metadata["correlation_id"]  # a status answer
    sent: Any = g.get("sluice_body")  # the body a view parsed (never parsed again here)
    if isinstance(sent, dict) and isinstance(sent.get("correlation_id"), str):  # a submit
        correlation_id = sent["correlation_id"]
    return message_id, correlation_id


def _teardown(_: BaseException | None) -> None:
    clear_message()


def instrument(app: Flask) -> None:
    """Measure and log every request of ``app``."""
    app.before_request(_before)
    app.after_request(_after)
    app.teardown_request(_teardown)
