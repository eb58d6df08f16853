"""Worker metrics: queue wait, time to first token, tokens/s, duration and outcomes.

Prefork children each write their samples; with ``PROMETHEUS_MULTIPROC_DIR`` set
(before the worker starts) prometheus-client keeps them in files there and the
worker's main process serves their sum on ``SLUICE_WORKER_METRICS_PORT``. Thread
and gevent pools run in one process and need no such folder.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

from workers.generation import Outcome

log = logging.getLogger("sluice.worker.metrics")

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
_RATES = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)

QUEUE_WAIT = Histogram(
    "sluice_worker_queue_wait_seconds",
    "Time from submit to the start of generation",
    ["queue"],
    buckets=_SECONDS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "sluice_worker_time_to_first_token_seconds",
    "Time from the start of generation to the first content delta",
    ["model"],
    buckets=_SECONDS,
)
TOKENS_PER_SECOND = Histogram(
    "sluice_worker_tokens_per_second",
    "Output tokens per second after the first token",
    ["model"],
    buckets=_RATES,
)
GENERATION_DURATION = Histogram(
    "sluice_worker_generation_duration_seconds",
    "Wall time of one generation, by outcome",
    ["model", "outcome"],
    buckets=_SECONDS,
)
GENERATIONS = Counter(
    "sluice_worker_generations",
    "Generations run, by outcome (completed, cancelled, error)",
    ["model", "queue", "outcome"],
)
OUTPUT_TOKENS = Counter("sluice_worker_output_tokens", "Output tokens generated", ["model"])
ROUTING = Counter(
    "sluice_worker_routing",
    "Routed messages as a worker saw them: own (it holds the conversation), taken (it left the "
    "message to the holder, which took it), ran_here (holder busy or gone: it ran the message)",
    ["decision"],
)
PROMPT_CACHE = Counter(
    "sluice_worker_prompt_cache",
    "Prompts of the embedded model by where their cached prefix came from: live (the KV cache "
    "as left), restored (a saved conversation state), logits (same prompt again), cold (nothing)",
    ["model", "source"],
)
PROMPT_TOKENS = Counter(
    "sluice_worker_prompt_tokens",
    "Prompt tokens of the embedded model, cached (reused) or evaluated",
    ["model", "kind"],
)


def record(model: str, queue: str, queue_wait_ms: float, outcome: Outcome) -> None:
    """Record one finished generation; a metrics failure is logged, never raised into the task."""
    try:
        _record(model, queue, queue_wait_ms, outcome)
    except Exception:  # e.g. PROMETHEUS_MULTIPROC_DIR removed under a running worker
        log.exception("could not record metrics")


def _record(model: str, queue: str, queue_wait_ms: float, outcome: Outcome) -> None:
    QUEUE_WAIT.labels(queue).observe(max(queue_wait_ms, 0.0) / 1000)
    GENERATIONS.labels(model, queue, outcome.status).inc()
    GENERATION_DURATION.labels(model, outcome.status).observe(outcome.duration_s)
    OUTPUT_TOKENS.labels(model).inc(outcome.output_tokens)
    if outcome.ttft_ms is not None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(outcome.ttft_ms / 1000)
        generating = outcome.duration_s - outcome.ttft_ms / 1000
        if outcome.output_tokens > 1 and generating > 0:
            TOKENS_PER_SECOND.labels(model).observe(outcome.output_tokens / generating)


def record_prefill(model: str, prefill: Any) -> None:
    """Count one prompt's cache source and its cached and evaluated tokens."""
    try:
        PROMPT_CACHE.labels(model, prefill.source).inc()
        PROMPT_TOKENS.labels(model, "cached").inc(prefill.cached_tokens)
        PROMPT_TOKENS.labels(model, "evaluated").inc(prefill.evaluated_tokens)
    except Exception:
        log.exception("could not record metrics")


def multiprocess_dir() -> str | None:
    """The folder of multiprocess samples, when this worker runs in that mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def serve(port: int, host: str, pool: str) -> None:
    """Serve this worker's metrics on ``host:port`` from a daemon thread of the main process."""
    folder = multiprocess_dir()
    if folder is None and pool == "prefork":
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: metrics of prefork children are not served")
    registry: CollectorRegistry | None = None
    if folder is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
    try:
        start_http_server(port, addr=host, registry=registry or REGISTRY)
    except OSError as exc:  # the port is taken: the worker still works, without its endpoint
        log.error("cannot serve metrics", extra={"port": port, "error": str(exc)})
        return
    log.info("metrics served", extra={"port": port, "multiprocess": folder is not None})


def process_gone(pid: int) -> None:
    """Drop the live samples of a child that exited (multiprocess mode only)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)
