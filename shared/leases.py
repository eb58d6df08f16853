"""Message locks with a lease: who may write a stream, and finding the ones whose worker died.

A worker that claims a message holds its lock (``owner`` = its run id) for a lease it
renews while generating. Every append is fenced on the owner, so two runs never write
one stream. The ``RUNNING`` set lists processing messages by lease expiry; the reaper
(``due_for_requeue``) finds those whose lease lapsed — the worker is gone — so they can
be queued again and resumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis

from shared.keys import RUNNING, message_keys
from shared.store.script import ScriptCall, Scripts, key


@dataclass(frozen=True, kw_only=True)
class RenewScript(ScriptCall[bool]):
    """Extend ``owner``'s lease and move the message's expiry in the running set; False when
    ``owner`` no longer holds the lock."""

    lock_key: str = key()
    running_key: str = key()
    owner: str
    lease_ms: int
    #: The new lease expiry (unix s): the message's score in the running set.
    expiry: float
    message_id: str

    BODY = """
if redis.call('GET', lock_key) ~= owner then return 0 end
redis.call('PEXPIRE', lock_key, lease_ms)
redis.call('ZADD', running_key, expiry, message_id)
return 1
"""

    def parse(self, reply: Any) -> bool:
        """Whether the lease is still ``owner``'s."""
        return bool(reply)


class Reaped(Enum):
    """What the reap script found for a message listed as running."""

    #: Not processing any more: dropped from the running set.
    DROP = "drop"
    #: A worker holds the lease: its running-set entry moves to the lease's end.
    ALIVE = "alive"
    #: Nobody holds the lease: queue it again (not again before the grace).
    REQUEUE = "requeue"


@dataclass(frozen=True)
class Requeue:
    """A processing message whose worker is gone, to be sent to ``queue`` again."""

    message_id: str
    queue: str
    band: int


@dataclass(frozen=True, kw_only=True)
class ReapScript(ScriptCall[Requeue | None]):
    """Check one message of the running set whose lease expiry has passed; a ``Requeue`` when
    nobody holds its lock (see ``Reaped``), else None."""

    status_key: str = key()
    lock_key: str = key()
    running_key: str = key()
    message_id: str
    now: float
    grace: float

    BODY = """
if redis.call('HGET', status_key, 'status') ~= 'processing' then
  redis.call('ZREM', running_key, message_id)
  return {'drop'}
end
local pttl = redis.call('PTTL', lock_key)
if pttl > 0 then
  redis.call('ZADD', running_key, now + pttl / 1000, message_id)
  return {'alive'}
end
redis.call('ZADD', running_key, now + grace, message_id)
local queue, band = unpack(redis.call('HMGET', status_key, 'queue', 'band'))
return {'requeue', queue or '', band or '0'}
"""

    def parse(self, reply: Any) -> Requeue | None:
        """The message to queue again, if any."""
        if Reaped(reply[0]) is not Reaped.REQUEUE:
            return None
        return Requeue(self.message_id, str(reply[1]), int(reply[2] or 0))


#: After a requeue, the reaper leaves a message alone this long for a worker to claim it.
REQUEUE_GRACE_SECONDS = 30.0


class Leases:
    """Renews message locks and finds lapsed ones."""

    def __init__(self, client: redis.Redis, lease_seconds: float) -> None:
        self.redis = client
        self.lease_ms = max(int(lease_seconds * 1000), 1)
        self.scripts = Scripts(client, (RenewScript, ReapScript), flags=True)

    def renew(self, message_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease on ``message_id``; False when it no longer holds it."""
        keys = message_keys(message_id)
        expiry = time.time() + self.lease_ms / 1000
        call = RenewScript(
            lock_key=keys.lock,
            running_key=RUNNING,
            owner=owner,
            lease_ms=self.lease_ms,
            expiry=expiry,
            message_id=message_id,
        )
        return self.scripts.run(call)

    def due_for_requeue(self, *, grace: float = REQUEUE_GRACE_SECONDS, limit: int = 100) -> list[Requeue]:
        """Processing messages whose lease lapsed (their worker died); each is marked so the
        next call skips it for ``grace`` seconds."""
        now = time.time()
        due: list[str] = self.redis.zrangebyscore(RUNNING, "-inf", now, start=0, num=limit)
        found: list[Requeue] = []
        for message_id in due:
            keys = message_keys(message_id)
            call = ReapScript(
                status_key=keys.status,
                lock_key=keys.lock,
                running_key=RUNNING,
                message_id=message_id,
                now=now,
                grace=grace,
            )
            requeue = self.scripts.run(call)
            if requeue is not None:
                found.append(requeue)
        return found
