"""Multi-turn conversations on two workers, routing on and off (part of ``bench/traffic.py``).

Two Celery worker processes (1 model thread each, so the two share the 2 cores without
spinning against each other), two API processes on the same Redis: one with conversation
routing on (the default settings), one with ``SLUICE_ROUTE_WAIT_MS=0``. 12 conversations x 6
turns (each turn = the previous messages + the answer + a new question) run concurrently,
interleaved as they come, paced (the user reads each answer) and saturated; a phase with
routing on and one with it off alternate (fresh nonces each phase). Per phase: TTFT, the
worker's claim → first token and the queue wait of turns ≥ 3, the throughput, and the share
of prompt tokens that came from a cache.
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import Metric, Options, bench_stack, log
from bench.targets import sluice_async, worker_status

TOPICS = (
    "tides",
    "volcanoes",
    "bread baking",
    "honey bees",
    "chess openings",
    "rainforests",
    "the moon",
    "bicycles",
    "glaciers",
    "coffee",
    "owls",
    "paper making",
)
FOLLOW_UPS = (
    "Tell me more about that.",
    "Why does that matter?",
    "Give me an example.",
    "What is a common mistake about it?",
    "Summarise what you said so far.",
)


@dataclass
class TurnResult:
    """One turn of one conversation."""

    conversation: int
    turn: int
    ttft_ms: float
    worker: str = ""
    cached_tokens: int = 0
    input_tokens: int = 0
    worker_ttft_ms: float = 0.0
    queue_wait_ms: float = 0.0


@dataclass
class Phase:
    """One run of every conversation with routing on or off."""

    routing: bool
    turns: list[TurnResult] = field(default_factory=list)
    wall_s: float = 0.0

    def median_late_ttft(self) -> float:
        late = [t.ttft_ms for t in self.turns if t.turn >= 2]
        return statistics.median(late) if late else float("nan")

    def median_late(self, name: str) -> float:
        """The median of a ``TurnResult`` field over turns >= 3."""
        late = [getattr(t, name) for t in self.turns if t.turn >= 2]
        return statistics.median(late) if late else float("nan")

    def throughput(self) -> float:
        return len(self.turns) / self.wall_s if self.wall_s else float("nan")

    def hit_share(self) -> float:
        """Share of the prompt tokens of turns ≥ 2 that came from a cache."""
        late = [t for t in self.turns if t.turn >= 1]
        total = sum(t.input_tokens for t in late)
        return sum(t.cached_tokens for t in late) / total if total else float("nan")


def _conversation(
    api: str, index: int, turns: int, max_tokens: int, nonce: str, phase: Phase, think: float
) -> None:
    topic = TOPICS[index % len(TOPICS)]
    pauses = random.Random(index)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"[{nonce}-{index}] Explain {topic} to me in a few sentences."}
    ]
    with httpx.Client(timeout=300) as client:
        for turn in range(turns):
            if turn:
                time.sleep(think * pauses.uniform(0.5, 1.5))  # the user reads the answer
            timing = sluice_async(client, api, messages, max_tokens)
            status = worker_status(client, api, timing.message_id)
            phase.turns.append(
                TurnResult(
                    index,
                    turn,
                    timing.ttft_ms,
                    str(status.get("worker", "")),
                    int(status.get("cached_tokens") or 0),
                    int(status.get("input_tokens") or 0),
                    float(status.get("ttft_ms") or 0),
                    float(status.get("queue_wait_ms") or 0),
                )
            )
            messages = [
                *messages,
                {"role": "assistant", "content": timing.text},
                {"role": "user", "content": FOLLOW_UPS[turn % len(FOLLOW_UPS)]},
            ]


def _phase(api: str, routing: bool, conversations: int, turns: int, max_tokens: int, think: float) -> Phase:
    phase = Phase(routing)
    nonce = secrets.token_hex(3)
    threads = [
        threading.Thread(target=_conversation, args=(api, i, turns, max_tokens, nonce, phase, think))
        for i in range(conversations)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # arrivals spread a little, as users' would be
    for thread in threads:
        thread.join()
    phase.wall_s = time.perf_counter() - started
    return phase


def _conversation_metrics(label: str, target: bool) -> dict[str, Metric]:
    """The figures of one conversation workload; the target rows only for the paced one."""
    m = {
        "ttft ratio": Metric(f"conversations ({label}): median TTFT of turns ≥ 3, routing on ÷ off", "ratio"),
        "rate ratio": Metric(f"conversations ({label}): throughput, routing on ÷ off", "ratio"),
        "worker ratio": Metric(
            f"conversations ({label}): median worker claim → first token of turns ≥ 3, routing on ÷ off",
            "ratio",
        ),
    }
    if target:
        m["ttft ratio"].target, m["ttft ratio"].check = "≤ 0.5", lambda v: v <= 0.5
        m["rate ratio"].target, m["rate ratio"].check = "≥ 1.0", lambda v: v >= 1.0
    for mode in ("on", "off"):
        m[f"ttft {mode}"] = Metric(f"conversations ({label}): median TTFT of turns ≥ 3, routing {mode}", "ms")
        m[f"worker {mode}"] = Metric(
            f"conversations ({label}): median worker claim → first token of turns ≥ 3, routing {mode}", "ms"
        )
        m[f"wait {mode}"] = Metric(
            f"conversations ({label}): median queue wait of turns ≥ 3, routing {mode}", "ms"
        )
        m[f"rate {mode}"] = Metric(f"conversations ({label}): throughput, routing {mode}", "gen/s")
        m[f"hits {mode}"] = Metric(
            f"conversations ({label}): prompt tokens from a cache (turns ≥ 2), routing {mode}", "share"
        )
    return m


def run_conversations(options: Options) -> tuple[list[Metric], list[dict[str, Any]]]:
    """Routing on ÷ off with two workers, paced (users read each answer: a think time) and
    saturated (every turn sent as soon as the last answer is in)."""
    conversations, turns = options.pick((6, 4), (12, 6))
    max_tokens = options.pick(24, 32)
    workloads = [
        ("paced", options.pick(3.0, 6.0), max(1, min(options.repeats, options.pick(1, 2))), True),
        ("saturated", 0.0, 1, False),
    ]
    reuse = os.environ.get("SLUICE_BENCH_REUSE_GENERATED", "false")  # the workers' setting, to compare
    workers = [
        {
            "hostname": f"w{i}",
            "queues": "sluice.local",
            "concurrency": 1,
            "env": {"SLUICE_MODEL_THREADS": "1", "SLUICE_MODEL_REUSE_GENERATED": reuse},
        }
        for i in (1, 2)
    ]
    metrics: list[Metric] = []
    raw: list[dict[str, Any]] = []
    with bench_stack("conversations", workers=workers) as st:
        off_api = st.stack.start_api(env={"SLUICE_ROUTE_WAIT_MS": "0"})
        on_api = st.api
        for label, think, repeats, target in workloads:
            m = _conversation_metrics(f"{label}, think {think:g} s", target)
            for repeat in range(repeats):
                results: dict[bool, Phase] = {}
                for routing in (True, False) if repeat % 2 == 0 else (False, True):
                    api = on_api if routing else off_api
                    phase = results[routing] = _phase(api, routing, conversations, turns, max_tokens, think)
                    log(
                        f"traffic: conversations {label}, routing {'on' if routing else 'off'}: "
                        f"TTFT {phase.median_late_ttft():.0f} ms, "
                        f"worker {phase.median_late('worker_ttft_ms'):.0f} ms, "
                        f"wait {phase.median_late('queue_wait_ms'):.0f} ms (turns ≥ 3), "
                        f"{phase.throughput():.2f} gen/s, cached share {phase.hit_share():.2f}"
                    )
                    raw.append(
                        {
                            "workload": label,
                            "think_s": think,
                            "repeat": repeat,
                            "routing": routing,
                            "wall_s": phase.wall_s,
                            "turns": [t.__dict__ for t in phase.turns],
                        }
                    )
                on, off = results[True], results[False]
                m["ttft ratio"].add(on.median_late_ttft() / off.median_late_ttft())
                m["rate ratio"].add(on.throughput() / off.throughput())
                m["worker ratio"].add(on.median_late("worker_ttft_ms") / off.median_late("worker_ttft_ms"))
                for mode, phase in (("on", on), ("off", off)):
                    m[f"ttft {mode}"].add(phase.median_late_ttft())
                    m[f"worker {mode}"].add(phase.median_late("worker_ttft_ms"))
                    m[f"wait {mode}"].add(phase.median_late("queue_wait_ms"))
                    m[f"rate {mode}"].add(phase.throughput())
                    m[f"hits {mode}"].add(phase.hit_share())
            metrics += m.values()
    return metrics, raw
