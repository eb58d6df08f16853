"""Real traffic: fresh prompts, the same prompt again, and multi-turn conversations on 2 workers.

**Fresh prompts.** Every repeat makes one prompt nobody has seen (a nonce at the start of the
user turn, so only the chat template's own system prompt is shared with earlier requests) and
runs it on four targets, in an order that rotates from repeat to repeat: llama-cpp-python
called in this process, ``llama_cpp.server``, Sluice ``/v1/messages/async`` + ``/stream``, and
Sluice ``POST /v1/messages`` ``stream:true``. Every target sees the same prompts. Ratios are
taken inside one repeat. The pipeline's share of a Sluice TTFT is the observer's TTFT minus
the worker's own claim → first token (``ttft_ms`` in the status).

**Same prompt.** Each target then runs one fixed prompt twice; the second run is measured
(the row the old benchmark reported: a repeated prompt, answered from what the engine kept).

**Conversations** (``bench/conversations.py``): 12 conversations x 6 turns on two model
workers, routing on and off, paced and saturated.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from bench.common import Metric, Options, bench_stack, log, percentile, write_result
from bench.targets import (
    SEGMENTS,
    Timing,
    direct,
    peer,
    segments,
    sluice_async,
    sluice_sync,
    start_peer,
    worker_status,
)

FRESH_TEXT = "Write a long story about a lighthouse keeper and a storm."
SAME_TEXT = "Write a long story about a baker who finds a map in the flour."


def _messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def run_single(options: Options) -> list[Metric]:
    """Fresh-prompt and same-prompt rows: four targets, ratios within each repeat."""
    from workers.providers.llama_cpp import load_llama

    max_tokens = options.pick(64, 200)
    ratio_ttft = Metric("fresh prompt: TTFT, Sluice async ÷ direct", "ratio", "≤ 1.15", lambda v: v <= 1.15)
    ratio_ttft_sync = Metric("fresh prompt: TTFT, Sluice /v1/messages stream ÷ direct", "ratio")
    ratio_ttft_peer = Metric("fresh prompt: TTFT, llama_cpp.server ÷ direct", "ratio")
    ratio_rate = Metric(
        "fresh prompt: decode tok/s, Sluice async ÷ direct", "ratio", "≥ 0.98", lambda v: v >= 0.98
    )
    pipeline = Metric(
        "fresh prompt: pipeline share of TTFT p50 (observer TTFT - worker claim → first token)",
        "ms",
        "≤ 5 ms",
        lambda v: v <= 5,
    )
    ttft = {name: Metric(f"fresh prompt: TTFT, {label}", "ms") for name, label in _LABELS.items()}
    rate = {name: Metric(f"fresh prompt: decode tok/s, {label}", "tok/s") for name, label in _LABELS.items()}
    worker_ttft = Metric("fresh prompt: worker claim → first token", "ms")
    same = {name: Metric(f"same prompt again: TTFT, {label}", "ms") for name, label in _LABELS.items()}
    same_ratio = Metric("same prompt again: TTFT, Sluice async ÷ direct", "ratio")
    parts = {name: Metric(f"fresh prompt, pipeline: {name}", "ms") for name in SEGMENTS}
    metrics = [
        ratio_ttft,
        ratio_rate,
        pipeline,
        *parts.values(),
        ratio_ttft_sync,
        ratio_ttft_peer,
        *ttft.values(),
        worker_ttft,
        *rate.values(),
        same_ratio,
        *same.values(),
    ]
    shares: list[float] = []
    workers = [
        {"hostname": "local", "queues": "sluice.local", "concurrency": 1},
        {
            "hostname": "sync",
            "queues": "sluice.local.c25",
            "concurrency": 1,
            "env": {"SLUICE_COALESCE_MS": "25"},
        },
    ]
    with bench_stack("traffic", workers=workers, env={"SLUICE_MODEL_THREADS": "2"}) as st:
        peer_url = start_peer(st)
        llm = load_llama(None, 4096, 2)
        with httpx.Client(timeout=120) as client:
            calls = {
                "direct": lambda m, n: direct(llm, m, n),
                "peer": lambda m, n: peer(client, peer_url, m, n),
                "async": lambda m, n: sluice_async(client, st.api, m, n),
                "sync": lambda m, n: sluice_sync(client, st.api, m, n),
            }
            log("traffic: warm-up")
            for call in calls.values():
                call(_messages("Hello."), 4)
            names = list(calls)
            for repeat in range(options.repeats):
                nonce = secrets.token_hex(4)
                fresh = _messages(f"[{nonce}] {FRESH_TEXT}")
                order = names[repeat % 4 :] + names[: repeat % 4]
                t = {name: calls[name](fresh, max_tokens) for name in order}
                d = t["direct"]
                status = worker_status(client, st.api, t["async"].message_id)
                share = t["async"].ttft_ms - float(status["ttft_ms"])
                shares.append(share)
                for metric, value in zip(
                    parts.values(), segments(st.redis, t["async"], float(status["ttft_ms"])), strict=True
                ):
                    metric.add(value)
                worker_ttft.add(float(status["ttft_ms"]))
                ratio_ttft.add(t["async"].ttft_ms / d.ttft_ms)
                ratio_ttft_sync.add(t["sync"].ttft_ms / d.ttft_ms)
                ratio_ttft_peer.add(t["peer"].ttft_ms / d.ttft_ms)
                ratio_rate.add(t["async"].decode_rate / d.decode_rate)
                for name, timing in t.items():
                    ttft[name].add(timing.ttft_ms)
                    rate[name].add(timing.decode_rate)
                again: dict[str, Timing] = {}
                for name in order:  # the same prompt twice in a row; the second run is measured
                    calls[name](_messages(SAME_TEXT), 8)
                    again[name] = calls[name](_messages(SAME_TEXT), 8)
                    same[name].add(again[name].ttft_ms)
                same_ratio.add(again["async"].ttft_ms / again["direct"].ttft_ms)
                log(
                    f"traffic: repeat {repeat + 1}: "
                    + ", ".join(f"{k} {v.ttft_ms:.1f} ms {v.decode_rate:.0f} tok/s" for k, v in t.items())
                    + f"; pipeline {share:.1f} ms; same prompt "
                    + ", ".join(f"{k} {v.ttft_ms:.1f} ms" for k, v in again.items())
                )
    pipeline.values = [percentile(shares, 50)] if shares else []
    return metrics


_LABELS = {
    "direct": "llama-cpp-python called directly",
    "peer": "llama_cpp.server",
    "async": "Sluice async (submit → SSE)",
    "sync": "Sluice /v1/messages stream",
}


def run(options: Options) -> list[Metric]:
    """Both parts (``bench/conversations.py`` is the second); one result file."""
    from bench.conversations import run_conversations

    metrics = run_single(options)
    conversation_metrics, raw = run_conversations(options)
    metrics += conversation_metrics
    write_result("traffic", options, metrics, {"conversations": raw, "fresh_text": FRESH_TEXT})
    return metrics
