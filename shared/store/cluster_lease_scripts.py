"""Redis Cluster message halves of the leases: ``MessageRenewScript``, ``MessageReapReadScript``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.store.base import Status, status_or_none
from shared.store.script import ScriptCall, key


@dataclass(frozen=True, kw_only=True)
class MessageRenewScript(ScriptCall[bool]):
    """Message half of a lease renewal: extend ``owner``'s lock; False when it lost it."""

    lock_key: str = key()
    owner: str
    lease_ms: int

    BODY = """
if redis.call('GET', lock_key) ~= owner then return 0 end
redis.call('PEXPIRE', lock_key, lease_ms)
return 1
"""

    def parse(self, reply: Any) -> bool:
        """Whether the lease is still ``owner``'s."""
        return bool(reply)


@dataclass(frozen=True)
class ReapView:
    """What the reaper needs of one message: its status, its lock's remaining ms, its queue."""

    status: Status | None
    lock_ms: int
    queue: str
    band: int


@dataclass(frozen=True, kw_only=True)
class MessageReapReadScript(ScriptCall[ReapView]):
    """What the reaper reads of a message listed as running (it acts on the control Redis)."""

    status_key: str = key()
    lock_key: str = key()

    BODY = """
local status, queue, band = unpack(redis.call('HMGET', status_key, 'status', 'queue', 'band'))
return {status or '', redis.call('PTTL', lock_key), queue or '', band or '0'}
"""

    def parse(self, reply: Any) -> ReapView:
        """The view."""
        status, pttl, queue, band = reply
        return ReapView(status_or_none(status), int(pttl), str(queue), int(band or 0))
