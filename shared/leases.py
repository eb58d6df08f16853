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

import redis

from shared.keys import RUNNING, message_keys

# KEYS: lock, running. ARGV: owner, lease ms, expiry (unix s), message id. 1 if still owned.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# KEYS: status, lock, running. ARGV: message id, now (unix s), grace s.
# Returns {drop} (not processing any more), {alive} (a worker holds the lease), or
# {requeue, queue, band} (nobody holds it: queue it again; not again before ``grace``).
_REAP = """
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'drop'}
end
local pttl = redis.call('PTTL', KEYS[2])
if pttl > 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + pttl / 1000, ARGV[1])
  return {'alive'}
end
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
local queue, band = unpack(redis.call('HMGET', KEYS[1], 'queue', 'band'))
return {'requeue', queue or '', band or '0'}
"""

#: After a requeue, the reaper leaves a message alone this long for a worker to claim it.
REQUEUE_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Requeue:
    """A processing message whose worker is gone, to be sent to ``queue`` again."""

    message_id: str
    queue: str
    band: int


class Leases:
    """Renews message locks and finds lapsed ones."""

    def __init__(self, client: redis.Redis, lease_seconds: float) -> None:
        self.redis = client
        self.lease_ms = max(int(lease_seconds * 1000), 1)
        self._renew = client.register_script(_RENEW)
        self._reap = client.register_script(_REAP)

    def renew(self, message_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease on ``message_id``; False when it no longer holds it."""
        keys = message_keys(message_id)
        expiry = time.time() + self.lease_ms / 1000
        result = self._renew(keys=[keys.lock, RUNNING], args=[owner, self.lease_ms, expiry, message_id])
        return bool(result)

    def due_for_requeue(self, *, grace: float = REQUEUE_GRACE_SECONDS, limit: int = 100) -> list[Requeue]:
        """Processing messages whose lease lapsed (their worker died); each is marked so the
        next call skips it for ``grace`` seconds."""
        now = time.time()
        due: list[str] = self.redis.zrangebyscore(RUNNING, "-inf", now, start=0, num=limit)
        found: list[Requeue] = []
        for message_id in due:
            keys = message_keys(message_id)
            reply = self._reap(keys=[keys.status, keys.lock, RUNNING], args=[message_id, now, grace])
            if reply[0] == "requeue":
                found.append(Requeue(message_id, str(reply[1]), int(reply[2] or 0)))
        return found
