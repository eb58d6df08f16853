"""The worker's side of conversation routing (``shared.routing``): defer, announce, hold."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from shared import routing
from shared.routing import RouteTable, defer, private_queue, shared_queue
from shared.store import PENDING, MessageStore
from workers import metrics
from workers.generation import Outcome

log = logging.getLogger("sluice.worker.routing")

#: How often a deferring worker looks whether the holder took the message.
POLL_SECONDS = 0.003
#: Seconds per output token a worker assumes before it has measured its own.
DEFAULT_SECONDS_PER_TOKEN = 0.02


@dataclass
class Pace:
    """This process's recent seconds per output token (to say when it will be free)."""

    seconds_per_token: float = DEFAULT_SECONDS_PER_TOKEN

    def learn(self, outcome: Outcome) -> None:
        if outcome.output_tokens > 1 and outcome.duration_s > 0:
            sample = outcome.duration_s / outcome.output_tokens
            self.seconds_per_token = 0.8 * self.seconds_per_token + 0.2 * sample


PACE = Pace()


def wait_for_holder(store: MessageStore, message_id: str, route: str, worker: str, wait_s: float) -> str:
    """Before a worker that is not ``route``'s claims a routed message: leave it to the holder
    while the holder is free or nearly so, for at most ``wait_s``. Returns the decision:
    ``own`` (this worker is the holder), ``taken`` (the holder took it meanwhile) or ``ran_here``."""
    if not route or route == private_queue(shared_queue(route), worker):
        return "own" if route else ""
    table = RouteTable(store.redis)
    started = time.monotonic()
    try:
        while True:
            if store.get_field(message_id, "status") != PENDING:
                return "taken"
            if not defer(routing.now(), table.free_at(route), time.monotonic() - started, wait_s):
                return "ran_here"
            time.sleep(POLL_SECONDS)
    except Exception:  # routing is an optimisation: on any trouble, run the message
        log.warning("routing check failed", extra={"message_id": message_id})
        return "ran_here"


def announce_busy(store: MessageStore, queue: str, worker: str, max_tokens: int) -> None:
    """Say until when this worker expects to be busy with a generation of ``max_tokens``."""
    try:
        until = routing.now() + max_tokens * PACE.seconds_per_token
        RouteTable(store.redis).busy_until(private_queue(queue, worker), until)
    except Exception:
        log.warning("could not record busy time")


def after_run(
    store: MessageStore, spec_id: str, queue: str, worker: str, request: dict[str, Any], outcome: Outcome
) -> None:
    """Free again; hold the conversation's next prefix when the run left its state here."""
    PACE.learn(outcome)
    mine = private_queue(queue, worker)
    try:
        table = RouteTable(store.redis)
        table.busy_until(mine, 0)
        if outcome.status == "completed" and outcome.stop_reason in ("end_turn", "max_tokens"):
            prefix = routing.next_prefix(spec_id, request, outcome.text)
            if prefix is not None:
                table.hold(prefix, mine)
    except Exception:
        log.warning("could not record the conversation's holder")


def record_decision(decision: str) -> None:
    """Count a routing decision in the worker's metrics."""
    if decision:
        metrics.ROUTING.labels(decision).inc()
