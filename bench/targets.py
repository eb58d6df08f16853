"""The four targets a benchmark prompt runs on, each timed from its caller: llama-cpp-python in
this process, ``llama_cpp.server``, Sluice ``/v1/messages/async`` + ``/stream`` and Sluice
``POST /v1/messages`` ``stream:true``; and where a Sluice TTFT goes (``segments``)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from deploy.probes import free_port, http_ok, wait_for

SEED = 7
#: The embedded model on a queue of its own (``bench.common.MODELS_TOML``), for the sync target.
SYNC_MODEL = "default-c25"


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


def start_peer(st: Any) -> str:
    """Start ``llama_cpp.server`` on the embedded model in the bench stack; its URL."""
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
