"""The vocabulary of Message Batches: lifecycle states, ids, one validated request."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"

#: Requests written per pipelined round trip at creation, and read per page of results.
CHUNK = 1000


def new_batch_id() -> str:
    """A unique batch id in Anthropic's style."""
    return "msgbatch_" + secrets.token_hex(12)


def request_message_id(batch_id: str, custom_id: str) -> str:
    """The public message id a batch request runs as."""
    return f"{batch_id}.{custom_id}"


@dataclass(frozen=True)
class BatchRequest:
    """One validated request of a batch."""

    custom_id: str
    params: dict[str, Any]


def iso_time(unix: float) -> str:
    """``unix`` as an ISO 8601 UTC time with milliseconds (the API's timestamps)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix % 1 * 1000):03d}Z"
