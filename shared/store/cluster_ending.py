"""The ending side of ``ClusterMessageStore``: finish, cancel, delete (message half, then control half)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from shared import events as ev
from shared.ending import Ending, StreamSoFar, ending_events
from shared.keys import (
    ANONYMOUS,
    PENDING,
    RUNNING,
    TENANT_SEP,
    message_keys,
    tenant_active,
    tenant_bytes,
    tenant_stored,
)
from shared.records import TOMBSTONE, TOMBSTONE_TTL_MS, now_iso
from shared.store.base import (
    CANCELLED,
    PROCESSING,
    TERMINAL_STATUSES,
    Status,
    StoreCore,
    status_or_none,
)
from shared.store.base import PENDING as PENDING_STATUS
from shared.store.cluster_end_scripts import (
    FinishControlScript,
    ForgetScript,
    MessageDeleteScript,
    MessageFinishScript,
)
from shared.store.removal import CANCEL_FLAG_TTL_SECONDS, FlagCancelScript
from shared.store.script import FieldValues


def tenant_of(storage_id: str) -> str:
    """The tenant a storage id belongs to (``shared.keys.scoped_id`` in reverse)."""
    tenant, sep, _ = storage_id.rpartition(TENANT_SEP)
    return tenant if sep else ANONYMOUS


class ClusterEndings(StoreCore):
    """Finish, cancel, delete and the release of a create cut short, for ``ClusterMessageStore``
    (which lists this part before ``MessageStore``, so these replace the single-script ones)."""

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
    ) -> Status | None:
        """As ``MessageStore.finish``: the message half (the truth), then the control half
        (indexes, the tenant's slot, the idempotency record's retention)."""
        assert status in TERMINAL_STATUSES
        keys = message_keys(message_id)
        call = MessageFinishScript(
            status_key=keys.status,
            events_key=keys.events,
            request_key=keys.request,
            cancel_key=keys.cancel,
            lock_key=keys.lock,
            retention=self.retention_seconds,
            maxlen=self.stream_maxlen,
            new_status=status,
            expected=expected,
            now_iso=now_iso(),
            owner=owner,
            wake_channel=keys.wake,
            fields=fields or {},
            events=[ev.encode(event) for event in events],
        )
        ended = self._finish_waiting(call, wait_ms) if wait_ms > 0 else self.message_scripts.run(call)
        if ended.status in TERMINAL_STATUSES:
            tenant = ended.tenant or ANONYMOUS
            control = FinishControlScript(
                running_key=RUNNING,
                pending_key=PENDING,
                active_key=tenant_active(tenant),
                stored_key=tenant_stored(tenant),
                sizes_key=tenant_bytes(tenant),
                idempotency_key=ended.idempotency_key,
                message_id=message_id,
                retention=self.retention_seconds,
            )
            self.scripts.run(control)
        return ended.status

    def _finish_waiting(self, call: MessageFinishScript, wait_ms: int) -> Any:
        """The message half of ``finish``, then ``WAIT 1`` on the same connection to the slot's
        primary (a cluster client would send the ``WAIT`` to some other node)."""
        node = self.messages.get_node_from_key(call.status_key)
        pipe = self.messages.get_redis_connection(node).pipeline(transaction=False)
        self.message_scripts.send(call, client=pipe)
        try:
            return call.parse(pipe.wait(1, wait_ms).execute()[0])
        except redis.ResponseError as exc:
            if not str(exc).startswith(("MOVED", "ASK")):
                raise
        return self.message_scripts.run(call)  # the slot moved: nothing ran there

    # -- cancel, delete ----------------------------------------------------

    def cancel(self, message_id: str) -> Status | None:
        """As ``MessageStore.cancel``, the flag set on the cluster."""
        status = status_or_none(self.get_field(message_id, "status"))
        if status == PENDING_STATUS:
            model = self.get_field(message_id, "model") or "default"
            ending = ending_events(StreamSoFar(message_id, model, started=False), Ending.cancelled())
            status = self.finish(message_id, CANCELLED, ending, expected=PENDING_STATUS)
        if status == PROCESSING:
            keys = message_keys(message_id)
            call = FlagCancelScript(
                status_key=keys.status, cancel_key=keys.cancel, flag_ttl=CANCEL_FLAG_TTL_SECONDS
            )
            status = self.message_scripts.run(call)
        return status

    def delete(self, message_id: str) -> bool:
        """As ``MessageStore.delete``: the message and its tombstone on the cluster, then the
        indexes, the tenant's counters and the idempotency record on the control Redis."""
        keys = message_keys(message_id)
        call = MessageDeleteScript(
            status_key=keys.status,
            events_key=keys.events,
            request_key=keys.request,
            lock_key=keys.lock,
            cancel_key=keys.cancel,
            tombstone=TOMBSTONE,
            tombstone_ttl_ms=TOMBSTONE_TTL_MS,
            wake_channel=keys.wake,
        )
        removed = self.message_scripts.run(call)
        if removed.status is None:
            return False
        self._forget(message_id, removed.tenant or ANONYMOUS, removed.idempotency_key)
        return True

    def _forget(self, message_id: str, tenant: str, idempotency_key: str | None) -> None:
        """The control half of a removal: indexes, the tenant's slot and bytes, idempotency."""
        call = ForgetScript(
            running_key=RUNNING,
            pending_key=PENDING,
            active_key=tenant_active(tenant),
            stored_key=tenant_stored(tenant),
            sizes_key=tenant_bytes(tenant),
            idempotency_key=idempotency_key,
            message_id=message_id,
        )
        self.scripts.run(call)
