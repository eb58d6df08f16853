"""Leases in Redis Cluster mode: locks on the cluster, the ``running`` index on the control Redis."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from shared.keys import PENDING, RUNNING, message_keys, tenant_active
from shared.leases import REQUEUE_GRACE_SECONDS, Leases, Requeue
from shared.store.base import PENDING as PENDING_STATUS
from shared.store.base import PROCESSING
from shared.store.cluster_ending import tenant_of
from shared.store.cluster_lease_scripts import MessageReapReadScript, MessageRenewScript

if TYPE_CHECKING:
    from shared.store.cluster import ClusterMessageStore

#: A pending-index entry older than this whose message is not pending is repaired by the reaper.
PENDING_REPAIR_SECONDS = 60.0


class ClusterLeases(Leases):
    """Leases whose locks live on the cluster and whose ``running`` index lives on the control
    Redis; the reaper also repairs index entries a crash between two halves left behind."""

    def __init__(self, store: ClusterMessageStore, lease_seconds: float) -> None:
        super().__init__(store.redis, lease_seconds)
        self.store = store

    def renew(self, message_id: str, owner: str) -> bool:
        """Extend ``owner``'s lock (cluster), then its ``running`` score (control)."""
        call = MessageRenewScript(lock_key=message_keys(message_id).lock, owner=owner, lease_ms=self.lease_ms)
        if not self.store.message_scripts.run(call):
            return False
        self.redis.zadd(RUNNING, {message_id: time.time() + self.lease_ms / 1000})
        return True

    def due_for_requeue(self, *, grace: float = REQUEUE_GRACE_SECONDS, limit: int = 100) -> list[Requeue]:
        """As ``Leases.due_for_requeue``, read on the cluster and acted on in the control Redis.
        Also queued again: a message still pending that a claim listed as running and never
        claimed (its worker died between the two). Entries of ended or removed messages leave
        every index; then old pending entries are checked the same way (``repair_pending``)."""
        now = time.time()
        due: list[str] = self.redis.zrangebyscore(RUNNING, "-inf", now, start=0, num=limit)
        found: list[Requeue] = []
        for message_id in due:
            keys = message_keys(message_id)
            view = self.store.message_scripts.run(
                MessageReapReadScript(status_key=keys.status, lock_key=keys.lock)
            )
            if view.status not in (PROCESSING, PENDING_STATUS):
                self._drop(message_id)
            elif view.status == PROCESSING and view.lock_ms > 0:
                self.redis.zadd(RUNNING, {message_id: now + view.lock_ms / 1000})
            else:
                self.redis.zadd(RUNNING, {message_id: now + grace})
                found.append(Requeue(message_id, view.queue, view.band))
        self.repair_pending(limit=limit)
        return found

    def _drop(self, message_id: str) -> None:
        """Out of the indexes and its tenant's concurrency: the message ended or is gone."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (RUNNING, PENDING, tenant_active(tenant_of(message_id))):
            pipe.zrem(key, message_id)
        pipe.execute()

    def repair_pending(self, *, older_than: float = PENDING_REPAIR_SECONDS, limit: int = 100) -> int:
        """Drop the oldest pending-index entries whose message is no longer pending (a crash after
        a claim or an end, before its control half); returns how many."""
        old: list[str] = self.redis.zrangebyscore(
            PENDING, "-inf", time.time() - older_than, start=0, num=limit
        )
        if not old:
            return 0
        pipe = self.store.messages.pipeline(transaction=False)
        for message_id in old:
            pipe.hget(message_keys(message_id).status, "status")
        repaired = 0
        for message_id, status in zip(old, pipe.execute(), strict=True):
            if status == PROCESSING:
                self.redis.zrem(PENDING, message_id)
                repaired += 1
            elif status != PENDING_STATUS:
                self._drop(message_id)
                repaired += 1
        return repaired
