"""Claims: a worker takes a pending message to run, or a processing one whose worker died.

Renewing the lease a claim takes, and finding lapsed ones, is ``shared.leases``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from shared.keys import PENDING, RUNNING, message_keys
from shared.records import Claim, ClaimOutcome, now_iso
from shared.store.base import StoreCore
from shared.store.script import ScriptCall, key


@dataclass(frozen=True, kw_only=True)
class ClaimScript(ScriptCall[Claim]):
    """Take a message to run: ``start`` (was pending), ``resume`` (processing, its lock lapsed:
    the worker is gone), ``exhausted`` (as resume, but over ``max_resumes``), ``locked`` (a live
    worker holds it), the terminal status, or ``gone``. start, resume and exhausted take the
    lock for ``owner`` and reply with the request and the status hash after the claim."""

    status_key: str = key()
    lock_key: str = key()
    pending_key: str = key()
    running_key: str = key()
    request_key: str = key()
    now_iso: str
    worker: str
    owner: str
    lease_ms: int
    #: When the lease lapses (unix s): the message's score in the running set.
    lease_expiry: float
    max_resumes: int
    message_id: str
    pid: int
    running_ttl: int

    BODY = """
local status = redis.call('HGET', status_key, 'status')
if not status then return {'gone'} end
local outcome
if status == 'pending' then
  redis.call('HSET', status_key, 'status', 'processing', 'started_at', now_iso)
  redis.call('ZREM', pending_key, message_id)
  outcome = 'start'
elseif status ~= 'processing' then
  return {status}
elseif redis.call('EXISTS', lock_key) == 1 then
  return {'locked'}
elseif redis.call('HINCRBY', status_key, 'resumes', 1) > max_resumes then
  outcome = 'exhausted'
else
  outcome = 'resume'
end
redis.call('HSET', status_key, 'updated_at', now_iso, 'worker', worker, 'worker_pid', pid)
redis.call('SET', lock_key, owner, 'PX', lease_ms)
redis.call('ZADD', running_key, lease_expiry, message_id)
redis.call('EXPIRE', running_key, running_ttl)
return {outcome, redis.call('GET', request_key) or '', unpack(redis.call('HGETALL', status_key))}
"""

    def parse(self, reply: Any) -> Claim:
        """The outcome, and for a run the request and the status hash."""
        outcome, *rest = reply
        if not rest:
            return Claim(ClaimOutcome(outcome))
        request, flat = rest[0], rest[1:]
        status = dict(zip(flat[::2], flat[1::2], strict=True))
        return Claim(ClaimOutcome(outcome), status, json.loads(request) if request else None)


class ClaimStore(StoreCore):
    """Claiming messages to run."""

    def claim(
        self, message_id: str, worker: str, *, owner: str, lease_ms: int, max_resumes: int, pid: int = 0
    ) -> Claim:
        """Take a message to run (see ``ClaimScript``); a run holds the lock for ``owner`` for
        ``lease_ms`` and gets the status hash and the request in the same round trip."""
        keys = message_keys(message_id)
        call = ClaimScript(
            status_key=keys.status,
            lock_key=keys.lock,
            pending_key=PENDING,
            running_key=RUNNING,
            request_key=keys.request,
            now_iso=now_iso(),
            worker=worker,
            owner=owner,
            lease_ms=lease_ms,
            lease_expiry=time.time() + lease_ms / 1000,
            max_resumes=max_resumes,
            message_id=message_id,
            pid=pid,
            running_ttl=self.active_ttl_seconds,
        )
        return self.scripts.run(call)
