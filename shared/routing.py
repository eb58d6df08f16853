"""Conversation-aware routing: send a continuing conversation to the worker that holds its prefix.

A worker that finished a turn of a conversation keeps its KV state (the embedded model's
prompt-state cache) and records, under the hash of the conversation *as the next turn will
send it* (every message so far plus the answer just written), its own queue: a private
queue each worker consumes before the shared one, band by band (``private_queue``).

On submit the API hashes the conversation without its last user turn (``conversation_prefix``:
the same function over the same text the model sees, ``shared.prompt.chat_turns``), looks the
holder up and, when there is one, queues the task twice: to the shared queue (as always, from
the create script, carrying ``route=<holder queue>``) and to the holder's private queue. Both
copies run the same message, whose claim is atomic: whichever worker claims first runs it,
the other copy finds it no longer pending and is skipped. The holder takes its private copy
as soon as it is free (a worker consumes its private queue before the shared queue of the same
band, and every band of higher priority first, so priority order holds); so that this never
starves other work, no private copy is queued while the oldest waiting message has waited
longer than ``route_max_skip_ms``. Another worker that
takes the shared copy first leaves the message to the holder while the holder is free or will
be within ``route_wait_ms`` (``defer``), and runs it itself otherwise or once that wait is
over: no message waits for a busy or lost holder.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from shared.keys import PENDING, WORKER_FREE, route_key
from shared.prompt import chat_turns

#: Providers that keep prompt state a conversation can come back to.
STATEFUL_PROVIDERS = frozenset({"llama_cpp"})
#: How long a worker's claim on a conversation prefix lives without being renewed.
ROUTE_TTL_SECONDS = 1800
#: Marks a worker's private queue: ``<queue>.w.<hostname>``.
PRIVATE_INFIX = ".w."


def private_queue(queue: str, hostname: str) -> str:
    """The queue only the worker ``hostname`` consumes, next to the shared ``queue``."""
    return f"{queue}{PRIVATE_INFIX}{hostname}"


def shared_queue(queue: str) -> str:
    """The shared queue of a private one (itself when it is not private)."""
    return queue.split(PRIVATE_INFIX, 1)[0]


def prefix_hash(model: str, turns: list[dict[str, str]]) -> str:
    """A short digest of a model id and the chat turns the model sees."""
    canonical = json.dumps([model, [[t["role"], t["content"]] for t in turns]], separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def conversation_prefix(model: str, body: dict[str, Any]) -> str | None:
    """The prefix of a continuing conversation (every turn but the last user turn), or None
    for a first turn or a request that ends with an assistant prefill."""
    messages = body.get("messages") or []
    if len(messages) < 2 or messages[-1].get("role") != "user":
        return None
    return prefix_hash(model, chat_turns(body)[:-1])


def next_prefix(model: str, request: dict[str, Any], answer: str) -> str | None:
    """The prefix the next turn of this conversation will have, once ``answer`` is appended."""
    messages = request.get("messages") or []
    if not messages or messages[-1].get("role") != "user":
        return None
    return prefix_hash(model, [*chat_turns(request), {"role": "assistant", "content": answer}])


def defer(now: float, holder_free_at: float | None, waited: float, wait: float) -> bool:
    """Whether a worker that is not the holder should leave a routed message to the holder a
    little longer: the holder is free, or will be within ``wait`` seconds, and this worker
    has waited less than ``wait``. An unknown holder (no record) is not waited for."""
    if holder_free_at is None or waited >= wait:
        return False
    return holder_free_at <= now + wait


@dataclass
class RouteTable:
    """The routing records in Redis: who holds which prefix, and when each worker is free."""

    redis: Any

    def holder(self, prefix: str) -> str | None:
        """The private queue of the worker holding ``prefix``."""
        found = self.redis.get(route_key(prefix))
        return str(found) if found else None

    def holder_and_oldest_pending(self, prefix: str) -> tuple[str | None, float | None]:
        """The holder of ``prefix`` and the creation time of the oldest waiting message, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(route_key(prefix))
        pipe.zrange(PENDING, 0, 0, withscores=True)
        holder, oldest = pipe.execute()
        return (str(holder) if holder else None), (float(oldest[0][1]) if oldest else None)

    def hold(self, prefix: str, queue: str, ttl: int = ROUTE_TTL_SECONDS) -> None:
        """Record that the worker of private ``queue`` holds ``prefix``."""
        self.redis.set(route_key(prefix), queue, ex=ttl)

    def busy_until(self, queue: str, when: float) -> None:
        """The worker of ``queue`` expects to be free at ``when`` (unix s; 0 = free now)."""
        self.redis.hset(WORKER_FREE, queue, round(when, 3))

    def free_at(self, queue: str) -> float | None:
        """When the worker of ``queue`` expects to be free (None: never recorded)."""
        raw = self.redis.hget(WORKER_FREE, queue)
        return float(raw) if raw is not None else None


def now() -> float:
    """Unix time, the clock routing records use."""
    return time.time()
