"""The model anchors: llama-cpp-python called directly, and its own OpenAI server, against Sluice.

Each repeat runs the same prompt, seed and max_tokens (greedy) four ways, one after the other
on an idle machine: directly in this process, through ``/v1/messages/async`` + ``/stream``,
through ``POST /v1/messages`` with ``stream:true``, and through ``llama_cpp.server``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import WINDOWS_MS, Metric, Options, bench_stack, log, write_result
from bench.targets import start_peer

PROMPT = "Write a long story about a lighthouse keeper and a storm."
SEED = 7


@dataclass
class Timing:
    """One generation seen from its caller: start, first token, last token, token count."""

    started: float
    first: float
    last: float
    tokens: int
    message_id: str = ""

    @classmethod
    def mean(cls, one: Timing, other: Timing) -> Timing:
        """A timing with the mean TTFT and the mean duration of two runs (same token count)."""
        ttft = (one.first - one.started + other.first - other.started) / 2
        total = (one.last - one.started + other.last - other.started) / 2
        return cls(0.0, ttft, total, one.tokens)

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.started) * 1000

    @property
    def tokens_per_second(self) -> float:
        """End-to-end rate: every token over the whole call, time to first token included."""
        return self.tokens / (self.last - self.started)


def direct(llm: Any, max_tokens: int) -> Timing:
    """llama-cpp-python's own streaming chat completion, in this process."""
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=SEED,
        stream=True,
    ):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
            tokens += 1
    return Timing(started, first, last, tokens)


def _sluice_body(max_tokens: int, model: str = "default", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "seed": SEED,
        "temperature": 0,
        "messages": [{"role": "user", "content": PROMPT}],
        **extra,
    }


def _sluice_events(lines: Any, started: float) -> Timing:
    first = last = 0.0
    tokens = 0
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "content_block_delta":
            last = time.perf_counter()
            first = first or last
        elif line.startswith("data: ") and event == "message_delta":
            tokens = json.loads(line[6:])["usage"]["output_tokens"]
    return Timing(started, first, last, tokens)


def sluice_async(client: httpx.Client, api: str, max_tokens: int, model: str = "default") -> Timing:
    """Submit, then observe the stream: the asynchronous path end to end."""
    started = time.perf_counter()
    body = _sluice_body(max_tokens, model)
    message_id = client.post(f"{api}/v1/messages/async", json=body).json()["message_id"]
    with client.stream("GET", f"{api}/v1/messages/async/{message_id}/stream") as response:
        timing = _sluice_events(response.iter_lines(), started)
    timing.message_id = message_id
    return timing


def worker_ttft_ms(client: httpx.Client, api: str, message_id: str) -> float:
    """The worker's own time from claiming the message to its first delta (``/status``)."""
    status = client.get(f"{api}/v1/messages/async/{message_id}/status").json()
    return float(status["metadata"]["ttft_ms"])


def sluice_sync(client: httpx.Client, api: str, max_tokens: int) -> Timing:
    """``POST /v1/messages`` with ``stream:true``, as an Anthropic SDK would call it."""
    started = time.perf_counter()
    with client.stream("POST", f"{api}/v1/messages", json=_sluice_body(max_tokens, stream=True)) as response:
        return _sluice_events(response.iter_lines(), started)


def peer(client: httpx.Client, base: str, max_tokens: int) -> Timing:
    """llama-cpp-python's OpenAI-compatible server, streaming chat completions."""
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
        "stream": True,
    }
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                tokens += 1
    return Timing(started, first, last, tokens)


def _repeat(
    llm: Any, client: httpx.Client, api: str, peer_url: str, max_tokens: int, repeat: int
) -> dict[str, Timing]:
    """One repeat: the direct call first and last, the others in between in an order that
    rotates from repeat to repeat (so none always runs right after the direct call); the
    Sluice/peer pair stays adjacent, its order alternating."""
    pair = [
        ("sync", lambda: sluice_sync(client, api, max_tokens)),
        ("peer", lambda: peer(client, peer_url, max_tokens)),
    ]
    windows = [
        [(f"{w} ms", lambda w=w: sluice_async(client, api, max_tokens, f"default-c{w}"))] for w in WINDOWS_MS
    ]
    units: list[list[tuple[str, Any]]] = [
        [("async", lambda: sluice_async(client, api, max_tokens))],
        pair if repeat % 2 == 0 else pair[::-1],
        *windows,
    ]
    shift = repeat % len(units)
    timings = {"direct": direct(llm, max_tokens)}
    for unit in units[shift:] + units[:shift]:
        for name, call in unit:
            timings[name] = call()
    timings["direct again"] = direct(llm, max_tokens)
    return timings


def run(options: Options) -> list[Metric]:
    """Efficiency, TTFT overhead and the peer-server ratios, each measured within one repeat."""
    from workers.providers.llama_cpp import load_llama

    max_tokens = options.pick(64, 160)
    efficiency = Metric(
        "streaming efficiency (Sluice async tok/s ÷ direct tok/s)", "ratio", "≥ 0.97", lambda v: v >= 0.97
    )
    overhead = Metric("TTFT overhead (Sluice async - direct)", "ms", "≤ 10 ms", lambda v: v <= 10)
    direct_ttft = Metric("direct llama-cpp-python TTFT", "ms")
    direct_rate = Metric("direct llama-cpp-python tokens/s", "tok/s")
    sluice_ttft = Metric("Sluice async TTFT (submit → first delta at observer)", "ms")
    pipeline = Metric("pipeline share of the TTFT (observer TTFT - worker's claim → first token)", "ms")
    peer_ttft_ratio = Metric(
        "peer: TTFT ratio (Sluice /v1/messages ÷ llama_cpp.server)", "ratio", "≤ 1.05", lambda v: v <= 1.05
    )
    peer_rate_ratio = Metric(
        "peer: tok/s ratio (Sluice /v1/messages ÷ llama_cpp.server)", "ratio", "≥ 0.97", lambda v: v >= 0.97
    )
    peer_ttft = Metric("llama_cpp.server TTFT", "ms")
    sync_ttft = Metric("Sluice /v1/messages stream TTFT", "ms")
    tokens = Metric("tokens per generation (Sluice)", "tokens")
    metrics = [
        efficiency,
        overhead,
        direct_ttft,
        sluice_ttft,
        pipeline,
        direct_rate,
        peer_ttft_ratio,
        peer_rate_ratio,
        peer_ttft,
        sync_ttft,
        tokens,
    ]
    by_window = {
        w: Metric(f"streaming efficiency, coalescing window {w} ms", "ratio", "≥ 0.97", lambda v: v >= 0.97)
        for w in WINDOWS_MS
    }
    metrics[2:2] = list(by_window.values())
    worker = {"hostname": "local", "queues": "sluice.local", "concurrency": 1}  # the default window
    others = [
        {
            "hostname": f"c{w}",
            "queues": f"sluice.local.c{w}",
            "concurrency": 1,
            "env": {"SLUICE_COALESCE_MS": str(w)},
        }
        for w in WINDOWS_MS
    ]
    with bench_stack("model", workers=[worker, *others], env={"SLUICE_MODEL_THREADS": "2"}) as st:
        peer_url = start_peer(st)
        llm = load_llama(None, 4096, 2)
        with httpx.Client(timeout=120) as client:
            log("model: warm-up")
            direct(llm, 8)
            sluice_async(client, st.api, 8)
            sluice_sync(client, st.api, 8)
            peer(client, peer_url, 8)
            for w in WINDOWS_MS:  # each worker has the prompt in its cache, as the default one has
                sluice_async(client, st.api, 8, f"default-c{w}")
            for repeat in range(options.repeats):
                t = _repeat(llm, client, st.api, peer_url, max_tokens, repeat)
                d = Timing.mean(t["direct"], t["direct again"])  # the reference: before and after
                a, s, p = t["async"], t["sync"], t["peer"]
                for w in WINDOWS_MS:
                    by_window[w].add(t[f"{w} ms"].tokens_per_second / d.tokens_per_second)
                efficiency.add(a.tokens_per_second / d.tokens_per_second)
                overhead.add(a.ttft_ms - d.ttft_ms)
                direct_ttft.add(d.ttft_ms)
                direct_rate.add(d.tokens_per_second)
                sluice_ttft.add(a.ttft_ms)
                pipeline.add(a.ttft_ms - worker_ttft_ms(client, st.api, a.message_id))
                peer_ttft.add(p.ttft_ms)
                sync_ttft.add(s.ttft_ms)
                peer_ttft_ratio.add(s.ttft_ms / p.ttft_ms)
                peer_rate_ratio.add(s.tokens_per_second / p.tokens_per_second)
                tokens.add(a.tokens)
                log(
                    f"model: repeat {repeat + 1}: "
                    + ", ".join(
                        f"{k} {v.ttft_ms:.1f} ms {v.tokens_per_second:.0f} tok/s" for k, v in t.items()
                    )
                )
    write_result(
        "model", options, metrics, {"max_tokens": max_tokens, "prompt": PROMPT, "windows_ms": WINDOWS_MS}
    )
    return metrics
