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

import json
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import Metric, Options, bench_stack, log, percentile, write_result
from deploy.stack import free_port, http_ok, wait_for

SEED = 7
#: The embedded model on a queue of its own (``bench.common.MODELS_TOML``), for the sync target.
SYNC_MODEL = "default-c25"
FRESH_TEXT = "Write a long story about a lighthouse keeper and a storm."
SAME_TEXT = "Write a long story about a baker who finds a map in the flour."


@dataclass
class Timing:
    """One generation seen from its caller."""

    started: float
    first: float
    last: float
    tokens: int
    text: str = ""
    message_id: str = ""
    #: Wall-clock (unix s) of ``started``, to compare with Redis and status timestamps.
    wall_started: float = 0.0

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.started) * 1000

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first token (the engine's decode speed as seen by the caller)."""
        return (self.tokens - 1) / max(self.last - self.first, 1e-9)


def _messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def direct(llm: Any, messages: list[dict[str, Any]], max_tokens: int) -> Timing:
    """llama-cpp-python's own streaming chat completion, in this process."""
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in llm.create_chat_completion(
        messages=messages, max_tokens=max_tokens, temperature=0.0, seed=SEED, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
            tokens += 1
    return Timing(started, first, last, tokens)


def peer(client: httpx.Client, base: str, messages: list[dict[str, Any]], max_tokens: int) -> Timing:
    """``llama_cpp.server``'s streaming chat completion."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "seed": SEED, "stream": True}
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


def _body(
    messages: list[dict[str, Any]], max_tokens: int, model: str = "default", **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "seed": SEED,
        "temperature": 0,
        "messages": messages,
        **extra,
    }


def _events(lines: Any, started: float) -> Timing:
    first = last = 0.0
    tokens = 0
    event = ""
    text: list[str] = []
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "content_block_delta":
            last = time.perf_counter()
            first = first or last
            text.append(json.loads(line[6:])["delta"].get("text", ""))
        elif line.startswith("data: ") and event == "message_delta":
            tokens = json.loads(line[6:])["usage"]["output_tokens"]
    return Timing(started, first, last, tokens, "".join(text))


def sluice_async(client: httpx.Client, api: str, messages: list[dict[str, Any]], max_tokens: int) -> Timing:
    """Submit, then observe the stream."""
    wall = time.time()
    started = time.perf_counter()
    message_id = client.post(f"{api}/v1/messages/async", json=_body(messages, max_tokens)).json()[
        "message_id"
    ]
    with client.stream("GET", f"{api}/v1/messages/async/{message_id}/stream") as response:
        timing = _events(response.iter_lines(), started)
    timing.message_id = message_id
    timing.wall_started = wall
    return timing


#: The segments of a Sluice TTFT, in order (``segments``).
SEGMENTS = (
    "submit → message created (API)",
    "created → claimed (queue, Celery hop to the pool child)",
    "claimed → first delta stored, minus the worker's own TTFT",
    "first delta stored → at the observer",
)


def segments(client: Any, timing: Timing, worker_ttft_ms: float) -> list[float]:
    """Where a Sluice TTFT went (ms), from the status hash and the stream's entry ids."""
    from datetime import datetime

    from shared.keys import message_keys
    from shared.streams.reads import StreamReads

    status_key = message_keys(timing.message_id).status
    created, started_iso = client.hmget(status_key, "created_ts", "started_at")
    claimed = datetime.fromisoformat(started_iso.replace("Z", "+00:00")).timestamp()
    first_stored = 0.0
    for event in StreamReads(client).replay(timing.message_id):
        if event.type == "content_block_delta":
            first_stored = int(event.id.split("-")[0]) / 1000
            break
    first_seen = timing.wall_started + (timing.first - timing.started)
    return [
        (float(created) - timing.wall_started) * 1000,
        (claimed - float(created)) * 1000,
        (first_stored - claimed) * 1000 - worker_ttft_ms,
        (first_seen - first_stored) * 1000,
    ]


def sluice_sync(
    client: httpx.Client, api: str, messages: list[dict[str, Any]], max_tokens: int, model: str = SYNC_MODEL
) -> Timing:
    """``POST /v1/messages`` with ``stream:true`` (on a worker of its own: the async target's
    worker has just seen the same prompt)."""
    started = time.perf_counter()
    with client.stream(
        "POST", f"{api}/v1/messages", json=_body(messages, max_tokens, model, stream=True)
    ) as response:
        return _events(response.iter_lines(), started)


def worker_status(client: httpx.Client, api: str, message_id: str) -> dict[str, Any]:
    """The status metadata of a message."""
    return dict(client.get(f"{api}/v1/messages/async/{message_id}/status").json()["metadata"])


def _start_peer(st: Any) -> str:
    from workers.providers.llama_cpp import default_model_path

    port = free_port()
    st.stack.spawn(
        "llama-cpp-server",
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            default_model_path(),
            "--n_threads",
            "2",
            "--n_threads_batch",
            "2",
            "--n_ctx",
            "4096",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(f"{url}/v1/models"), 120, "llama_cpp.server")
    return url


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
        peer_url = _start_peer(st)
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
