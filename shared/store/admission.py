"""Admission: creating a message (with its limits and its task) and spending rate tokens."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared import keys as keys_mod
from shared.broker import TaskMessage
from shared.keys import ANONYMOUS, message_keys, rate_bucket, tenant_active, tenant_bytes, tenant_stored
from shared.keys import PENDING as PENDING_SET
from shared.records import Admission, AdmissionOutcome, Limits, now_iso
from shared.store.base import EXPIRE_WITH_LAST, Status, StoreCore
from shared.store.script import FieldValues, ScriptCall, key, optional_key, pairs

#: Admission with every limit off.
NO_LIMITS = Limits()

# A tenant's token bucket (hash ``tokens``, ``ts``): take one token; returns the ms until one is
# back when there is none (0 = taken). Shared by the create script and ``take_rate_token``.
TAKE_TOKEN = """
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


@dataclass(frozen=True, kw_only=True)
class CreateScript(ScriptCall[Admission]):
    """Store a new pending message and push its task, unless a duplicate or a limit forbids it.

    Replies ``{outcome, detail}``: limited (detail = ms until a token) | created | idempotent
    (detail = the stored idempotency value) | exists | overloaded | busy | quota. The rate token
    is spent first, as every call counts against the rate; only ``created`` writes the message
    and LPUSHes its task message (kombu's Redis transport publishes by that same LPUSH), so a
    message is queued exactly when it is stored. The broker list sits outside the message's hash
    slot: kombu's transport is not for Redis Cluster anyway. The quota counts the stored request
    bytes of the tenant's messages until their keys expire (entries past their expiry are dropped
    from the count here, a bounded number per call). ``#!lua``: a script with flags (none) is
    refused as a whole when Redis is over maxmemory, before it runs; without them Redis lets it
    write past the limit (measured: 10 MB stored under a 4 MB cap).
    """

    status_key: str = key()
    request_key: str = key()
    pending_key: str = key()
    active_key: str = key()
    rate_key: str = key()
    #: A deleted message's tombstone stream, removed when its id is created anew.
    events_key: str = key()
    stored_key: str = key()
    sizes_key: str = key()
    idempotency_key: str | None = optional_key()
    #: The kombu list the task message goes to.
    broker_key: str | None = optional_key()
    request_json: str
    ttl: int
    #: ``<body digest> <message id>``, stored under ``idempotency_key``.
    idempotency_value: str = ""
    max_depth: int = 0
    max_concurrent: int = 0
    now: float
    message_id: str
    rate_capacity: float = 0
    rate_refill: float = 0
    task_payload: str = ""
    quota: int = 0
    status_fields: FieldValues = pairs()  # noqa: RUF009  (a dataclasses.field)

    FLAGGED = True
    PRELUDE = TAKE_TOKEN + EXPIRE_WITH_LAST
    BODY = """
if rate_capacity > 0 then
  local wait = take_token(rate_key, rate_capacity, rate_refill, now)
  if wait > 0 then return {'limited', tostring(wait)} end
end
if idempotency_key then
  local prior = redis.call('GET', idempotency_key)
  if prior then return {'idempotent', prior} end
end
if redis.call('EXISTS', status_key) == 1 then return {'exists', ''} end
local horizon = now - ttl
redis.call('ZREMRANGEBYSCORE', pending_key, '-inf', horizon)
if max_depth > 0 and redis.call('ZCARD', pending_key) >= max_depth then
  return {'overloaded', ''}
end
redis.call('ZREMRANGEBYSCORE', active_key, '-inf', horizon)
if max_concurrent > 0 and redis.call('ZCARD', active_key) >= max_concurrent then
  return {'busy', ''}
end
if quota > 0 then
  local stale = redis.call('ZRANGEBYSCORE', stored_key, '-inf', now, 'LIMIT', 0, 256)
  if #stale > 0 then
    local freed = 0
    for _, size in ipairs(redis.call('HMGET', sizes_key, unpack(stale))) do
      freed = freed + (tonumber(size) or 0)
    end
    redis.call('HDEL', sizes_key, unpack(stale))
    redis.call('ZREM', stored_key, unpack(stale))
    redis.call('HINCRBY', sizes_key, '#total', -freed)
  end
  local used = tonumber(redis.call('HGET', sizes_key, '#total')) or 0
  if used + #request_json > quota then return {'quota', tostring(used)} end
  redis.call('ZADD', stored_key, now + ttl, message_id)
  redis.call('HSET', sizes_key, message_id, #request_json)
  redis.call('HINCRBY', sizes_key, '#total', #request_json)
  expire_with_last(stored_key, sizes_key)
end
redis.call('DEL', events_key)
redis.call('SET', request_key, request_json, 'EX', ttl)
redis.call('HSET', status_key, unpack(ARGV, status_fields_from, status_fields_to))
redis.call('EXPIRE', status_key, ttl)
for _, set in ipairs({pending_key, active_key}) do
  redis.call('ZADD', set, now, message_id)
  redis.call('EXPIRE', set, ttl)
end
if idempotency_key then redis.call('SET', idempotency_key, idempotency_value, 'EX', ttl) end
if broker_key then redis.call('LPUSH', broker_key, task_payload) end
return {'created', ''}
"""

    def parse(self, reply: Any) -> Admission:
        """The admission; an idempotent repeat is told from a conflict by the body digest."""
        outcome, detail = AdmissionOutcome(reply[0]), str(reply[1])
        if outcome is AdmissionOutcome.LIMITED:
            return Admission(outcome, self.message_id, int(detail) / 1000)
        if outcome is AdmissionOutcome.CREATED:
            return Admission(outcome, self.message_id, epoch=str(self.status_fields.get("epoch", "")))
        if outcome is not AdmissionOutcome.IDEMPOTENT:
            return Admission(outcome, self.message_id)
        digest, _, first_id = detail.partition(" ")
        mine = self.idempotency_value.partition(" ")[0]
        return Admission(
            AdmissionOutcome.IDEMPOTENT if digest == mine else AdmissionOutcome.CONFLICT, first_id
        )


@dataclass(frozen=True, kw_only=True)
class RateScript(ScriptCall[float]):
    """Take one token from a tenant's bucket; the seconds until one is back (0.0: taken)."""

    bucket_key: str = key()
    capacity: float
    refill: float
    now: float

    PRELUDE = TAKE_TOKEN
    BODY = "return take_token(bucket_key, capacity, refill, now)\n"

    def parse(self, reply: Any) -> float:
        """Milliseconds from Lua, seconds here."""
        return int(reply) / 1000


class AdmissionStore(StoreCore):
    """Creating messages and charging the rate."""

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

        This is one of the two ways ``sluice.generate`` is queued: ``task`` is a protocol-2
        message built by hand (``shared.broker.TaskMessages``, from a template, for speed:
        kombu's ``send_task`` costs more than the rest of a submit) and LPUSHed by the create
        script, so the message is stored if and only if its task is queued. The other way is
        Celery's ``send_task`` in the reaper (``workers/reaper.py``), for a message whose worker
        died. Both must produce the same message: ``tests/unit/test_broker.py`` compares the
        hand-built one with what ``send_task`` writes (task name, headers, properties, body
        layout), so a change of Celery version or task signature fails there first.
        """
        keys = message_keys(message_id)
        now = now_iso()
        unix_now = time.time()
        epoch = str(fields.get("epoch") or secrets.token_hex(8))
        idem_key = keys_mod.idempotency(tenant, idempotency[0]) if idempotency else ""
        capacity = (limits.rate_burst or limits.rate_per_minute) if limits.rate_per_minute else 0
        status_fields: dict[str, str | int | float] = {
            "status": Status.PENDING,
            "created_at": now,
            "updated_at": now,
            "created_ts": unix_now,
            "tenant": tenant,
            "idem_key": idem_key,
            **fields,
            "epoch": epoch,
        }
        call = CreateScript(
            status_key=keys.status,
            request_key=keys.request,
            pending_key=PENDING_SET,
            active_key=tenant_active(tenant),
            rate_key=rate_bucket(tenant),
            events_key=keys.events,
            stored_key=tenant_stored(tenant),
            sizes_key=tenant_bytes(tenant),
            idempotency_key=idem_key or None,
            broker_key=task.list_key if task else None,
            request_json=json.dumps(request, separators=(",", ":")),
            ttl=self.active_ttl_seconds,
            idempotency_value=f"{idempotency[1]} {message_id}" if idempotency else "",
            max_depth=limits.max_queue_depth,
            max_concurrent=limits.max_concurrent,
            now=unix_now,
            message_id=message_id,
            rate_capacity=capacity,
            rate_refill=limits.rate_per_minute / 60,
            task_payload=task.payload if task else "",
            quota=limits.max_stored_bytes,
            status_fields=status_fields,
        )
        return self.scripts.run_fast(call)

    def take_rate_token(self, tenant: str, limits: Limits) -> float:
        """Spend one of ``tenant``'s rate tokens on a call that creates nothing (``/validate``,
        ``/count_tokens``); the seconds until a token is back, 0.0 when one was taken."""
        if not limits.rate_per_minute:
            return 0.0
        capacity = limits.rate_burst or limits.rate_per_minute
        call = RateScript(
            bucket_key=rate_bucket(tenant),
            capacity=capacity,
            refill=limits.rate_per_minute / 60,
            now=time.time(),
        )
        return self.scripts.run(call)
