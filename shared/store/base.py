"""What every part of the message store shares: the statuses, the client and its scripts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from shared.keys import ANONYMOUS, message_keys, tenant_active, tenant_bytes, tenant_stored
from shared.store.script import ScriptCall, Scripts
from shared.store_reads import StoreReads


class Status(StrEnum):
    """A message's ``status`` field (a ``str``, so it compares equal to the stored text)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"


PENDING = Status.PENDING
PROCESSING = Status.PROCESSING
COMPLETED = Status.COMPLETED
CANCELLED = Status.CANCELLED
ERROR = Status.ERROR
TERMINAL_STATUSES = frozenset({COMPLETED, CANCELLED, ERROR})


def status_or_none(reply: Any) -> Status | None:
    """A script's status reply (nil: the message does not exist)."""
    return Status(reply) if reply else None


@dataclass(frozen=True)
class TenantKeys:
    """The keys outside a message's own that its end or removal updates: its tenant's active set
    and stored-bytes keys, and the idempotency key it is listed under (None: none)."""

    active: str
    stored: str
    sizes: str
    idempotency: str | None


class StoreCore(StoreReads):
    """The client, the store's settings and its registered scripts; the lifecycle parts
    (``shared.store.admission`` …) add the state changes."""

    #: Every script call class of the store, registered once per instance (set by ``MessageStore``).
    SCRIPTS: Sequence[type[ScriptCall[Any]]] = ()

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
        #: Where a message's own keys live: ``client`` itself, or a Redis Cluster in cluster mode
        #: (``shared.store.cluster``), with the scripts that run there.
        self.messages: Any = client
        self.retention_seconds = retention_seconds
        self.active_ttl_seconds = active_ttl_seconds
        self.stream_maxlen = stream_maxlen
        self.scripts = Scripts(client, self.SCRIPTS, flags=script_flags)
        self.message_scripts = self.scripts

    def _tenant_keys(self, message_id: str) -> TenantKeys:
        """The shared keys ``message_id`` is counted in (read from its status hash)."""
        tenant, idem_key = self.redis.hmget(message_keys(message_id).status, "tenant", "idem_key")
        tenant = tenant or ANONYMOUS
        return TenantKeys(
            tenant_active(tenant), tenant_stored(tenant), tenant_bytes(tenant), idem_key or None
        )


# A tenant's stored-bytes keys (sorted set by expiry, sizes hash) live as long as the message
# that expires last. Used by create, finish and delete.
EXPIRE_WITH_LAST = """
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
