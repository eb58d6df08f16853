"""The message store: status hashes, requests and event streams in Redis.

Every state change is one Lua script, so a transition and the events that go with it happen
together or not at all, and terminal states never change. The store is split by lifecycle, one
module per stage, each with its scripts (``shared.store.script``: named arguments, typed results):

- ``admission``: ``create`` (limits, idempotency, the task pushed with the message), rate tokens;
- ``claims``: ``claim`` (a worker takes a message; leases are ``shared.leases``);
- ``appends``: ``append`` (events of a running message) and ``finish`` (the terminal write);
- ``removal``: ``cancel`` and ``delete``;

and the reads are ``shared.store_reads``. ``MessageStore`` is all of them on one client.

Lifecycle: ``pending`` → ``processing`` → ``completed`` | ``cancelled`` | ``error``;
``pending`` → ``cancelled`` directly when cancelled before a worker starts it.
"""

from __future__ import annotations

from shared.keys import ANONYMOUS
from shared.records import (
    TOMBSTONE,
    TOMBSTONE_TTL_MS,
    Admission,
    AdmissionOutcome,
    Claim,
    ClaimOutcome,
    Limits,
    now_iso,
)
from shared.store.admission import NO_LIMITS, AdmissionStore, CreateScript, RateScript
from shared.store.appends import AppendScript, FinishScript, Signal
from shared.store.base import (
    CANCELLED,
    COMPLETED,
    ERROR,
    PENDING,
    PROCESSING,
    TERMINAL_STATUSES,
    Status,
)
from shared.store.claims import ClaimScript, ClaimStore
from shared.store.removal import CANCEL_FLAG_TTL_SECONDS, DeleteScript, FlagCancelScript, RemovalStore
from shared.store.script import FieldValues

__all__ = [
    "ANONYMOUS",
    "CANCELLED",
    "CANCEL_FLAG_TTL_SECONDS",
    "COMPLETED",
    "ERROR",
    "NO_LIMITS",
    "PENDING",
    "PROCESSING",
    "TERMINAL_STATUSES",
    "TOMBSTONE",
    "TOMBSTONE_TTL_MS",
    "Admission",
    "AdmissionOutcome",
    "Claim",
    "ClaimOutcome",
    "FieldValues",
    "Limits",
    "MessageStore",
    "Signal",
    "Status",
    "now_iso",
]


class MessageStore(AdmissionStore, ClaimStore, RemovalStore):
    """Reads and changes messages; one instance per process, shared by threads."""

    SCRIPTS = (
        CreateScript,
        RateScript,
        ClaimScript,
        AppendScript,
        FinishScript,
        FlagCancelScript,
        DeleteScript,
    )
