"""The message store: status hashes, requests and event streams in Redis.

Every state change is one Lua script, so a transition and the events that go
with it happen together or not at all, and terminal states never change.

Lifecycle: ``pending`` → ``processing`` → ``completed`` | ``cancelled`` | ``error``;
``pending`` → ``cancelled`` directly when cancelled before a worker starts it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from redis.commands.core import Script

from shared import events as ev
from shared import keys as keys_mod
from shared.broker import TaskMessage
from shared.keys import (
    ANONYMOUS,
    WORKER_ALIVE_SECONDS,
    WORKERS,
    message_keys,
    rate_bucket,
    tenant_active,
    tenant_bytes,
    tenant_stored,
)
from shared.keys import PENDING as PENDING_SET
from shared.keys import RUNNING as RUNNING_SET

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
CANCELLED = "cancelled"
ERROR = "error"
TERMINAL_STATUSES = frozenset({COMPLETED, CANCELLED, ERROR})


#: How long a cancel flag lives; the generation that should see it is long over by then.
CANCEL_FLAG_TTL_SECONDS = 3600

_CURSOR = re.compile(r"^(0|\d{1,20}-\d{1,20})$")

FieldValues = Mapping[str, str | int | float]

# KEYS: status, request, idempotency, pending, tenant active, tenant rate bucket, broker list,
#       events (a deleted message's tombstone, removed when its id is created anew),
#       tenant stored (sorted set), tenant bytes (hash).
# ARGV: request JSON, ttl, idempotency value ('' = none), max depth, max concurrent (0 = off),
#       now (unix s), message id, rate capacity (0 = off), rate refill per second,
#       task message ('' = none), stored-bytes quota (0 = off), field/value...
# The quota counts the stored request bytes of the tenant's messages until their keys expire
# (entries past their expiry are dropped from the count here, a bounded number per call).
# Returns {outcome, detail}: limited (detail = ms until a token) | created | idempotent (detail =
# the stored value) | exists | overloaded | busy. The rate token is spent first, as every call
# counts against the rate; only ``created`` writes the message and LPUSHes its task message
# (kombu's Redis transport publishes by that same LPUSH), so a message is queued exactly when
# it is stored. The broker list sits outside the message's hash slot: kombu's transport is not
# for Redis Cluster anyway.
# A tenant's token bucket (hash ``tokens``, ``ts``): take one token; returns the ms until one is
# back when there is none (0 = taken). Shared by the create script and ``take_rate_token``.
_TAKE_TOKEN = """
local function take_token(key, capacity, rate, now)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / rate * 1000) + 1000)
  return wait
end
"""

# "#!lua": a script with flags (none) is refused as a whole when Redis is over maxmemory, before
# it runs; without them Redis lets it write past the limit (measured: 10 MB stored under a 4 MB cap).
# A tenant's stored-bytes keys (sorted set by expiry, sizes hash) live as long as the message
# that expires last.
_EXPIRE_WITH_LAST = """
local function expire_with_last(stored, sizes)
  local last = redis.call('ZRANGE', stored, -1, -1, 'WITHSCORES')
  if last[2] then
    local at = math.ceil(tonumber(last[2])) + 1
    redis.call('EXPIREAT', stored, at)
    redis.call('EXPIREAT', sizes, at)
  else
    redis.call('DEL', stored, sizes)
  end
end
"""

_CREATE = (
    "#!lua\n"
    + _TAKE_TOKEN
    + _EXPIRE_WITH_LAST
    + """
local capacity = tonumber(ARGV[8])
if capacity > 0 then
  local wait = take_token(KEYS[6], capacity, tonumber(ARGV[9]), tonumber(ARGV[6]))
  if wait > 0 then return {'limited', tostring(wait)} end
end
if ARGV[3] ~= '' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {'idempotent', prior} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
local horizon = tonumber(ARGV[6]) - tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', horizon)
if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then
  return {'overloaded', ''}
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', horizon)
if tonumber(ARGV[5]) > 0 and redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[5]) then
  return {'busy', ''}
end
local quota = tonumber(ARGV[11])
if quota > 0 then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[9], '-inf', ARGV[6], 'LIMIT', 0, 256)
  if #stale > 0 then
    local freed = 0
    for _, size in ipairs(redis.call('HMGET', KEYS[10], unpack(stale))) do
      freed = freed + (tonumber(size) or 0)
    end
    redis.call('HDEL', KEYS[10], unpack(stale))
    redis.call('ZREM', KEYS[9], unpack(stale))
    redis.call('HINCRBY', KEYS[10], '#total', -freed)
  end
  local used = tonumber(redis.call('HGET', KEYS[10], '#total')) or 0
  if used + #ARGV[1] > quota then return {'quota', tostring(used)} end
  redis.call('ZADD', KEYS[9], tonumber(ARGV[6]) + tonumber(ARGV[2]), ARGV[7])
  redis.call('HSET', KEYS[10], ARGV[7], #ARGV[1])
  redis.call('HINCRBY', KEYS[10], '#total', #ARGV[1])
  expire_with_last(KEYS[9], KEYS[10])
end
redis.call('DEL', KEYS[8])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 4, 5 do
  redis.call('ZADD', KEYS[i], ARGV[6], ARGV[7])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2]) end
if ARGV[10] ~= '' then redis.call('LPUSH', KEYS[7], ARGV[10]) end
return {'created', ''}
"""
)

# KEYS: bucket. ARGV: capacity, refill per second, now (unix s). Returns the ms until a token.
_RATE = _TAKE_TOKEN + "return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"

# KEYS: status, lock, pending, running, request.
# ARGV: now (iso), worker, owner, lease ms, lease expiry (unix s), max resumes, message id, pid,
#       ttl of the running set.
# Returns {outcome}: start (was pending) | resume (processing, its lock lapsed: the worker is
# gone) | exhausted (as resume, but over max resumes) | locked (a live worker holds it) |
# the terminal status | gone. start, resume and exhausted take the lock for ``owner``.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'gone'} end
local outcome
if status == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at', ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[7])
  outcome = 'start'
elseif status ~= 'processing' then
  return {status}
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  return {'locked'}
elseif redis.call('HINCRBY', KEYS[1], 'resumes', 1) > tonumber(ARGV[6]) then
  outcome = 'exhausted'
else
  outcome = 'resume'
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1], 'worker', ARGV[2], 'worker_pid', ARGV[8])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[9])
return {outcome, redis.call('GET', KEYS[5]) or '', unpack(redis.call('HGETALL', KEYS[1]))}
"""

# KEYS: status, events, cancel, lock. ARGV: ttl, maxlen, owner ('' = unchecked), lease ms,
#       n_fields, field/value..., event JSON...
# Returns -1 when the message is no longer processing (deleted, or ended) or another worker
# owns it now, else the cancel flag. Renews the writer's lease.
_APPEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then return -1 end
if ARGV[3] ~= '' then
  if redis.call('GET', KEYS[4]) ~= ARGV[3] then return -1 end
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
local nf = tonumber(ARGV[5])
if nf > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + 2 * nf)) end
for i = 6 + 2 * nf, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return redis.call('EXISTS', KEYS[3])
"""

# KEYS: status, events, request, cancel, lock, running, pending, tenant active, idempotency,
#       tenant stored.
# ARGV: retention, maxlen, new status, expected status ('' = any live one), now,
#       owner ('' = unchecked), message id, n_fields, field/value..., event JSON...
# Returns the status the message has afterwards (nil when it does not exist). The tenant's
# stored-bytes entry for the message now ends with its retention.
_FINISH = (
    _EXPIRE_WITH_LAST
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'completed' or status == 'cancelled' or status == 'error' then return status end
if ARGV[4] ~= '' and status ~= ARGV[4] then return status end
if ARGV[6] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[6] then return status end
local nf = tonumber(ARGV[8])
if nf > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 9, 8 + 2 * nf)) end
for i = 9 + 2 * nf, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i])
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'updated_at', ARGV[5], 'completed_at', ARGV[5],
           'event_count', redis.call('XLEN', KEYS[2]))
redis.call('DEL', KEYS[4], KEYS[5])
for i = 6, 8 do redis.call('ZREM', KEYS[i], ARGV[7]) end
for _, i in ipairs({1, 2, 3, 9}) do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
local kept_until = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1])
if redis.call('ZADD', KEYS[10], 'XX', 'CH', kept_until, ARGV[7]) == 1 then
  expire_with_last(KEYS[10], KEYS[11])
end
return ARGV[3]
"""
)

# KEYS: status, cancel. ARGV: flag ttl. Sets the flag for a running message; returns its status.
_FLAG_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'processing' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[1]) end
return status
"""

# KEYS: status, events, request, lock, cancel, running, pending, tenant active, idempotency,
#       tenant stored, tenant bytes.
# ARGV: message id, tombstone JSON, tombstone ttl ms. The message's stored bytes are released.
# Returns 1 if it existed. A running generation stops at its next append, which finds no
# status (and its lease renewal finds no lock). The stream is replaced by a one-entry
# tombstone that lives a few seconds: its XADD wakes every blocked tail of the stream, in
# every API process, which then finds the status gone and ends its observers (the tombstone
# itself is never sent: see ``StreamGone``).
_DELETE = (
    _EXPIRE_WITH_LAST
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[9])
for i = 6, 8 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if redis.call('ZREM', KEYS[10], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[11], '#total', -(tonumber(redis.call('HGET', KEYS[11], ARGV[1])) or 0))
  redis.call('HDEL', KEYS[11], ARGV[1])
  expire_with_last(KEYS[10], KEYS[11])
end
redis.call('XADD', KEYS[2], '*', 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

#: The entry a deleted message's stream is replaced by (never sent to an observer).
TOMBSTONE = '{"type":"sluice_deleted"}'
#: How long a tombstone stays: enough for every tail to wake, short enough to be no storage.
TOMBSTONE_TTL_MS = 10_000


@dataclass(frozen=True)
class Claim:
    """What ``claim`` did, and for a run (``start``, ``resume``, ``exhausted``) what the worker
    needs next, read in the same round trip: the status hash after the claim and the request."""

    outcome: str
    status: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] | None = None

    @property
    def runs(self) -> bool:
        return self.outcome in ("start", "resume", "exhausted")


@dataclass(frozen=True)
class Admission:
    """What ``create`` did: ``created``, ``idempotent`` (``message_id`` is the first call's),
    ``conflict`` (same Idempotency-Key, other body), ``exists``, ``overloaded``, ``busy``,
    ``quota`` (the tenant's stored bytes) or ``limited`` (the tenant's rate; ``retry_after`` is
    the seconds until its next token)."""

    outcome: str
    message_id: str
    retry_after: float = 0.0
    #: The creation stamp of a message this call created (``""`` otherwise).
    epoch: str = ""


@dataclass(frozen=True)
class Limits:
    """Admission limits checked atomically with the create (0 = off).

    The rate is a token bucket per tenant: ``rate_per_minute`` messages a minute, in bursts
    of up to ``rate_burst`` (0: the per-minute figure).
    """

    max_queue_depth: int = 0
    max_concurrent: int = 0
    rate_per_minute: int = 0
    rate_burst: int = 0
    #: Request bytes a tenant's messages may keep stored at once.
    max_stored_bytes: int = 0


class InvalidCursor(ValueError):
    """A stream cursor that is malformed or names no stored event."""


class StreamGone(LookupError):
    """The message a reader follows was deleted or expired (or its id now names a new message)."""


@dataclass(frozen=True)
class StreamCursor:
    """Where an observer starts: after ``after``; ``ended`` when that is the terminal event."""

    after: str
    ended: bool = False


def epoch_of(status: Mapping[str, str]) -> str:
    """The creation stamp of a message's status hash (``""`` for messages stored before stamps).

    A message id can be deleted and created again; readers bind to the stamp, not the id, so
    what they follow is always the message they started with."""
    return status.get("epoch", "")


@dataclass(frozen=True)
class StoredEvent:
    """One event as stored: its stream position, its type and its JSON data."""

    id: str
    type: str
    data: str


def now_iso() -> str:
    """The current time as ISO-8601 UTC with ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flatten(fields: FieldValues) -> list[str | int | float]:
    flat: list[str | int | float] = []
    for name, value in fields.items():
        flat.extend((name, value))
    return flat


def _flatten_events(events: Sequence[ev.Event]) -> list[str]:
    return [ev.encode(event) for event in events]


def stored_event(entry_id: str, fields: dict[str, str]) -> StoredEvent:
    """A stream entry as a ``StoredEvent``: one field ``d``, the event's JSON, whose type is read
    from its fixed prefix (storing the type again would cost ~20 bytes an entry)."""
    data = fields["d"]
    return StoredEvent(entry_id, ev.type_of(data), data)


class MessageStore:
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
        self.retention_seconds = retention_seconds
        self.active_ttl_seconds = active_ttl_seconds
        self.stream_maxlen = stream_maxlen
        self._create = client.register_script(_CREATE if script_flags else _CREATE.removeprefix("#!lua\n"))
        self._claim = client.register_script(_CLAIM)
        self._append = client.register_script(_APPEND)
        self._finish = client.register_script(_FINISH)
        self._flag_cancel = client.register_script(_FLAG_CANCEL)
        self._delete = client.register_script(_DELETE)
        self._rate = client.register_script(_RATE)

    # -- writing -----------------------------------------------------------

    def create(
        self,
        message_id: str,
        request: Mapping[str, Any],
        fields: FieldValues,
        *,
        tenant: str = ANONYMOUS,
        idempotency: tuple[str, str] | None = None,
        limits: Limits = Limits(),
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

    def all_events(self, message_id: str) -> list[StoredEvent]:
        """Every stored event of the message, oldest first."""
        entries = self.redis.xrange(message_keys(message_id).events)
        return [stored_event(entry_id, data) for entry_id, data in entries]

    # -- reading -----------------------------------------------------------

    def get_status(self, message_id: str) -> dict[str, str] | None:
        """The status hash, or None when the message does not exist."""
        status: dict[str, str] = self.redis.hgetall(message_keys(message_id).status)
        return status or None

    def get_field(self, message_id: str, name: str) -> str | None:
        """One field of the status hash."""
        value: str | None = self.redis.hget(message_keys(message_id).status, name)
        return value

    def get_request(self, message_id: str) -> dict[str, Any] | None:
        """The stored request body."""
        raw = self.redis.get(message_keys(message_id).request)
        return json.loads(raw) if raw else None

    def check_cursor(self, message_id: str, cursor: str) -> StreamCursor:
        """Validate a resume cursor: well-formed and naming a stored event (``0`` = start).

        A cursor at the terminal event is ``ended``: nothing follows it, so there is nothing
        to wait for."""
        if not _CURSOR.match(cursor):
            raise InvalidCursor(f"malformed event id {cursor!r}; expected <ms>-<seq>")
        if cursor in ("0", "0-0"):
            return StreamCursor("0-0")
        found = self.redis.xrange(message_keys(message_id).events, cursor, cursor, count=1)
        if not found:
            raise InvalidCursor(f"event id {cursor!r} is not part of this stream")
        entry_id, data = found[0]
        return StreamCursor(cursor, ended=ev.is_terminal(stored_event(entry_id, data).type))

    def read_events(
        self,
        message_id: str,
        after: str,
        *,
        block_ms: int | None = None,
        count: int = 512,
        epoch: str | None = None,
    ) -> list[StoredEvent]:
        """Events strictly after ``after``; with ``block_ms``, wait that long for one.

        With ``epoch``, the read also checks (in the same round trip) that the message is still
        the one created with that stamp, and raises ``StreamGone`` when it is not."""
        keys = message_keys(message_id)
        if epoch is None:
            reply = self.redis.xread({keys.events: after}, count=count, block=block_ms)
        else:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xread({keys.events: after}, count=count, block=block_ms)
            pipe.hmget(keys.status, "status", "epoch")
            reply, (status, found) = pipe.execute()
            if status is None or (found or "") != epoch:
                raise StreamGone(message_id)
        if not reply:
            return []
        _, entries = reply[0]
        return [stored_event(entry_id, data) for entry_id, data in entries]

    def is_current(self, message_id: str, epoch: str) -> bool:
        """True while the message exists and is the one created with ``epoch``."""
        status, found = self.redis.hmget(message_keys(message_id).status, "status", "epoch")
        return status is not None and (found or "") == epoch

    def ttls(self, message_id: str) -> dict[str, int]:
        """The TTL of each existing key of the message (-1 = none), for checks and tests."""
        keys = message_keys(message_id).all()
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        return {key: ttl for key, ttl in zip(keys, pipe.execute(), strict=True) if ttl != -2}

    # -- workers -----------------------------------------------------------

    def worker_heartbeat(self, hostname: str) -> None:
        """Record that worker ``hostname`` is alive now."""
        self.redis.zadd(WORKERS, {hostname: time.time()})

    def worker_gone(self, hostname: str) -> None:
        """Forget worker ``hostname`` (it shut down)."""
        self.redis.zrem(WORKERS, hostname)

    def live_workers(self) -> list[str]:
        """Hostnames of the workers whose heartbeat is recent."""
        since = time.time() - WORKER_ALIVE_SECONDS
        workers: list[str] = self.redis.zrangebyscore(WORKERS, since, "+inf")
        return workers
