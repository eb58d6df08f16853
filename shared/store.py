"""The message store: status hashes, requests and event streams in Redis.

Every state change is one Lua script, so a transition and the events that go
with it happen together or not at all, and terminal states never change.

Lifecycle: ``pending`` → ``processing`` → ``completed`` | ``cancelled`` | ``error``;
``pending`` → ``cancelled`` directly when cancelled before a worker starts it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.commands.core import Script

from shared import events as ev
from shared import keys as keys_mod
from shared import store_scripts as lua
from shared.broker import TaskMessage
from shared.keys import (
    ANONYMOUS,
    message_keys,
    rate_bucket,
    tenant_active,
    tenant_bytes,
    tenant_stored,
)
from shared.keys import PENDING as PENDING_SET
from shared.keys import RUNNING as RUNNING_SET
from shared.records import (
    TOMBSTONE,
    TOMBSTONE_TTL_MS,
    Admission,
    Claim,
    Limits,
    now_iso,
)
from shared.store_reads import StoreReads

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
CANCELLED = "cancelled"
ERROR = "error"
TERMINAL_STATUSES = frozenset({COMPLETED, CANCELLED, ERROR})


#: Admission with every limit off.
NO_LIMITS = Limits()
#: How long a cancel flag lives; the generation that should see it is long over by then.
CANCEL_FLAG_TTL_SECONDS = 3600

FieldValues = Mapping[str, str | int | float]


def _flatten(fields: FieldValues) -> list[str | int | float]:
    flat: list[str | int | float] = []
    for name, value in fields.items():
        flat.extend((name, value))
    return flat


def _flatten_events(events: Sequence[ev.Event]) -> list[str]:
    return [ev.encode(event) for event in events]


class MessageStore(StoreReads):
    """Reads and changes messages; one instance per process, shared by threads."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        retention_seconds: int = 3600,
        active_ttl_seconds: int = 86400,
        stream_maxlen: int = 100_000,
        script_flags: bool | None = None,
    ) -> None:
        """``script_flags=False`` drops the ``#!lua`` line of the create script, for Redis
        emulations that cannot parse it; real Redis needs it for the memory limit. None: drop it
        only for fakeredis (the unit tests' Redis)."""
        if script_flags is None:
            script_flags = not type(client).__module__.startswith("fakeredis")
        self.redis = client
        self.messages: Any = client
        self.retention_seconds = retention_seconds
        self.active_ttl_seconds = active_ttl_seconds
        self.stream_maxlen = stream_maxlen
        self._create = client.register_script(
            lua.CREATE if script_flags else lua.CREATE.removeprefix("#!lua\n")
        )
        self._claim = client.register_script(lua.CLAIM)
        self._append = client.register_script(lua.APPEND)
        self._finish = client.register_script(lua.FINISH)
        self._flag_cancel = client.register_script(lua.FLAG_CANCEL)
        self._delete = client.register_script(lua.DELETE)
        self._rate = client.register_script(lua.RATE)

    # -- writing -----------------------------------------------------------

    def create(
        self,
        message_id: str,
        request: Mapping[str, Any],
        fields: FieldValues,
        *,
        tenant: str = ANONYMOUS,
        idempotency: tuple[str, str] | None = None,
        limits: Limits = NO_LIMITS,
        task: TaskMessage | None = None,
    ) -> Admission:
        """Store a new pending message unless a duplicate or a limit forbids it, atomically,
        and push ``task`` (its Celery message) to the broker in the same step.

        ``idempotency`` is ``(key digest, body digest)`` of an ``Idempotency-Key`` call.
        """
        keys = message_keys(message_id)
        now = now_iso()
        unix_now = time.time()
        epoch = str(fields.get("epoch") or secrets.token_hex(8))
        idem_key = keys_mod.idempotency(tenant, idempotency[0]) if idempotency else ""
        idem_value = f"{idempotency[1]} {message_id}" if idempotency else ""
        capacity = (limits.rate_burst or limits.rate_per_minute) if limits.rate_per_minute else 0
        outcome, detail = self._call(
            self._create,
            keys=[
                keys.status,
                keys.request,
                idem_key or keys.status,
                PENDING_SET,
                tenant_active(tenant),
                rate_bucket(tenant),
                task.list_key if task else keys.status,
                keys.events,
                tenant_stored(tenant),
                tenant_bytes(tenant),
            ],
            args=[
                json.dumps(request, separators=(",", ":")),
                self.active_ttl_seconds,
                idem_value,
                limits.max_queue_depth,
                limits.max_concurrent,
                unix_now,
                message_id,
                capacity,
                limits.rate_per_minute / 60,
                task.payload if task else "",
                limits.max_stored_bytes,
                "status",
                PENDING,
                "created_at",
                now,
                "updated_at",
                now,
                "created_ts",
                unix_now,
                "tenant",
                tenant,
                "idem_key",
                idem_key,
                *_flatten(fields),
                "epoch",
                epoch,
            ],
        )
        if outcome == "limited":
            return Admission("limited", message_id, int(detail) / 1000)
        if outcome == "created":
            return Admission("created", message_id, epoch=epoch)
        if outcome != "idempotent":
            return Admission(str(outcome), message_id)
        digest, _, first_id = str(detail).partition(" ")
        assert idempotency is not None
        return Admission("idempotent" if digest == idempotency[1] else "conflict", first_id)

    def take_rate_token(self, tenant: str, limits: Limits) -> float:
        """Spend one of ``tenant``'s rate tokens on a call that creates nothing (``/validate``,
        ``/count_tokens``); the seconds until a token is back, 0.0 when one was taken."""
        if not limits.rate_per_minute:
            return 0.0
        capacity = limits.rate_burst or limits.rate_per_minute
        wait = self._rate(
            keys=[rate_bucket(tenant)], args=[capacity, limits.rate_per_minute / 60, time.time()]
        )
        return int(wait) / 1000

    def _call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """``script(keys, args)`` on a pooled connection directly, for the hot path.

        redis-py's command layers (retry wrapper, response callbacks, argument shims) cost
        about a third of a small script call (measured 100 → 66 µs). Anything unusual (a
        script Redis has not loaded yet, a dropped connection) goes the ordinary way, which
        loads the script and retries as redis-py does; a failed send ran nothing.
        """
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            sha = script.sha  # type: ignore[attr-defined]  # (types-redis lacks it; redis-py has it)
            conn.send_command("EVALSHA", sha, len(keys), *keys, *args)
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            pool.release(conn)
            return script(keys=keys, args=args)
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:
            pass
        except BaseException:
            conn.disconnect()  # the reply may still come: never hand this connection out again
            raise
        finally:
            pool.release(conn)
        return script(keys=keys, args=args)

    def claim(
        self, message_id: str, worker: str, *, owner: str, lease_ms: int, max_resumes: int, pid: int = 0
    ) -> Claim:
        """Take a message to run: ``start``, ``resume``, ``exhausted``, ``locked``, a terminal
        status, or ``gone``; the first three hold the lock for ``owner`` for ``lease_ms`` and
        come with the status hash and the request."""
        keys = message_keys(message_id)
        outcome, *rest = self._claim(
            keys=[keys.status, keys.lock, PENDING_SET, RUNNING_SET, keys.request],
            args=[
                now_iso(),
                worker,
                owner,
                lease_ms,
                time.time() + lease_ms / 1000,
                max_resumes,
                message_id,
                pid,
                self.active_ttl_seconds,
            ],
        )
        if not rest:
            return Claim(str(outcome))
        request, flat = rest[0], rest[1:]
        status = dict(zip(flat[::2], flat[1::2], strict=True))
        return Claim(str(outcome), status, json.loads(request) if request else None)

    def append(
        self,
        message_id: str,
        events: Sequence[ev.Event],
        fields: FieldValues | None = None,
        *,
        owner: str = "",
        lease_ms: int = 0,
    ) -> int:
        """Append events of a processing message (and set status fields) in one round trip.

        Returns 1 when a cancel was asked for, 0 to go on, -1 when the message is no
        longer processing (deleted or ended) or no longer ``owner``'s: the writer must stop.
        """
        keys = message_keys(message_id)
        fields = fields or {}
        return int(
            self._append(
                keys=[keys.status, keys.events, keys.cancel, keys.lock],
                args=[
                    self.active_ttl_seconds,
                    self.stream_maxlen,
                    owner,
                    lease_ms or 1,
                    len(fields),
                    *_flatten(fields),
                    *_flatten_events(events),
                ],
            )
        )

    def finish(
        self,
        message_id: str,
        status: str,
        events: Sequence[ev.Event],
        fields: FieldValues | None = None,
        *,
        expected: str = PROCESSING,
        owner: str = "",
        wait_ms: int = 0,
    ) -> str | None:
        """Append the final events and set a terminal status atomically; every key gets the
        retention TTL. Returns the status afterwards: ``status`` if this call ended it.

        With ``wait_ms``, then waits up to that long for a replica to acknowledge the write
        (``WAIT 1``, on the same connection); a failover after that cannot lose the ending."""
        assert status in TERMINAL_STATUSES
        keys = message_keys(message_id)
        fields = fields or {}
        pipe = self.redis.pipeline(transaction=False) if wait_ms > 0 else None
        result = self._finish(
            client=pipe,
            keys=self._all_keys(message_id, keys.status, keys.events, keys.request, keys.cancel, keys.lock),
            args=[
                self.retention_seconds,
                self.stream_maxlen,
                status,
                expected,
                now_iso(),
                owner,
                message_id,
                len(fields),
                *_flatten(fields),
                *_flatten_events(events),
            ],
        )
        if pipe is not None:
            result = pipe.wait(1, wait_ms).execute()[0]
        return str(result) if result else None

    def _all_keys(self, message_id: str, *own: str) -> list[str]:
        """``own`` keys, then the shared sets, the idempotency key the message is listed in and
        its tenant's stored-bytes keys."""
        tenant, idem_key = self.redis.hmget(message_keys(message_id).status, "tenant", "idem_key")
        tenant = tenant or ANONYMOUS
        return [
            *own,
            RUNNING_SET,
            PENDING_SET,
            tenant_active(tenant),
            idem_key or own[0],
            tenant_stored(tenant),
            tenant_bytes(tenant),
        ]

    def cancel(self, message_id: str) -> str | None:
        """Cancel: a pending message ends at once with a well-formed cancelled stream, a
        processing one gets the flag its generation loop checks. Returns the status now."""
        status = self.get_field(message_id, "status")
        if status == PENDING:
            model = self.get_field(message_id, "model") or "default"
            ending = [ev.message_start(message_id, model, 0), *ev.cancelled_ending(None, 0)]
            status = self.finish(message_id, CANCELLED, ending, expected=PENDING)
        if status == PROCESSING:
            keys = message_keys(message_id)
            result = self._flag_cancel(keys=[keys.status, keys.cancel], args=[CANCEL_FLAG_TTL_SECONDS])
            status = str(result) if result else None
        return status

    def delete(self, message_id: str) -> bool:
        """Remove a message's status, request and events (a running generation stops)."""
        keys = message_keys(message_id)
        deleted = self._delete(
            keys=self._all_keys(message_id, keys.status, keys.events, keys.request, keys.lock, keys.cancel),
            args=[message_id, TOMBSTONE, TOMBSTONE_TTL_MS],
        )
        return bool(deleted)
