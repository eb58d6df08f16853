"""The mapping from a request's ``priority`` (lower is served sooner) onto kombu priorities.

On the Redis transport kombu keeps one list per priority step and 0 is served
first. We use all ten steps, so every integer from -5 to 4 gets its own band:

    kombu = clamp(priority + 5, 0, 9)

``priority`` -5 or lower → 0 (served first); the default 0 → 5; 4 or higher → 9.
Requests without a priority get the default, never the most urgent band, so any
explicit priority below the default outranks them. Within a band kombu's lists are
FIFO (LPUSH to publish, BRPOP to consume). A worker's BRPOP lists band 0 of every
queue it consumes before any band 1, so bands order across its queues too, and
``queue_order_strategy: priority`` keeps the queues of one band in their listed order
(no round-robin). Band N waits in the Redis list ``shared.keys.broker_list(queue, N)``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every kombu step is its own list on Redis: ten bands, 0 = most urgent.
PRIORITY_STEPS = list(range(10))
#: ``priority`` values at or below this share the most urgent band.
MOST_URGENT = -5
#: ``priority`` values at or above this share the least urgent band.
LEAST_URGENT = 4
DEFAULT_PRIORITY = 0


@dataclass(frozen=True)
class Placement:
    """Where a message waits: its queue and kombu priority (band)."""

    queue: str
    band: int
    priority: int


def kombu_priority(priority: int | None, default: int = DEFAULT_PRIORITY) -> int:
    """The kombu priority (0 = served first) for a request's ``priority``."""
    value = default if priority is None else priority
    return min(max(value - MOST_URGENT, 0), len(PRIORITY_STEPS) - 1)


def place(queue: str, priority: int | None, default: int = DEFAULT_PRIORITY) -> Placement:
    """The queue and band for a message."""
    value = default if priority is None else priority
    return Placement(queue=queue, band=kombu_priority(value), priority=value)
