"""The message store with its per-message keys on a Redis Cluster (``SLUICE_STORE_CLUSTER_NODES``).

Two Redis handles: ``messages`` (the cluster: a message's status, request, stream, cancel flag and
lock, all in the slot of its hash tag ``{<storage id>}``) and ``redis`` (the *control* Redis: the
broker, the ``pending``/``running`` indexes, tenant counters, idempotency records). A Lua script
may only touch one slot, so every change that spans both is two calls (``store_cluster_scripts``),
ordered so that a crash between them never loses an accepted message nor runs one twice:

- create: control half first (rate, idempotency, limits, pending index, the task push), then the
  message. A worker whose claim finds no message yet tries again for ``NOT_YET_SECONDS``, then
  drops the reservation; a retry of the create with its Idempotency-Key finishes writing it.
- claim: listed as running first (so a crash leaves the reaper a trace), then the message half
  (the truth), then out of pending.
- finish, delete: the message half is the truth; the control half follows. A crash between them
  leaves index entries the reaper repairs (``ClusterLeases``).

Without ``SLUICE_STORE_CLUSTER_NODES`` none of this runs: ``store_for`` builds the plain
``MessageStore`` with its single atomic scripts.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from shared import events as ev
from shared import keys as keys_mod
from shared import store_cluster_scripts as cs
from shared import store_scripts as lua
from shared.broker import TaskMessage
from shared.keys import (
    ANONYMOUS,
    PENDING,
    RUNNING,
    TENANT_SEP,
    message_keys,
    rate_bucket,
    tenant_active,
    tenant_bytes,
    tenant_stored,
)
from shared.leases import REQUEUE_GRACE_SECONDS, Leases, Requeue
from shared.records import TOMBSTONE, TOMBSTONE_TTL_MS, Admission, Claim, Limits, now_iso
from shared.redis_client import store_client
from shared.settings import Settings
from shared.store import (
    NO_LIMITS,
    PROCESSING,
    TERMINAL_STATUSES,
    FieldValues,
    MessageStore,
    _flatten,
    _flatten_events,
)
from shared.store import PENDING as PENDING_STATUS

#: How long a claim that finds an admitted message not written yet keeps trying.
NOT_YET_SECONDS = 10.0
#: A pending-index entry older than this whose message is not pending is repaired by the reaper.
PENDING_REPAIR_SECONDS = 60.0


def tenant_of(storage_id: str) -> str:
    """The tenant a storage id belongs to (``shared.keys.scoped_id`` in reverse)."""
    tenant, sep, _ = storage_id.rpartition(TENANT_SEP)
    return tenant if sep else ANONYMOUS


def _tenant_keys(tenant: str) -> list[str]:
    """The tenant's keys a message's end or removal updates (control Redis)."""
    return [tenant_active(tenant), tenant_stored(tenant), tenant_bytes(tenant)]


class ClusterMessageStore(MessageStore):
    """``MessageStore`` over two Redis handles: per-message scripts on the cluster, indexes,
    tenant counters and the broker on the control Redis."""

    def __init__(self, control: redis.Redis, messages: Any, **options: Any) -> None:
        """``messages``: a ``redis.cluster.RedisCluster``; ``options`` as ``MessageStore``'s."""
        super().__init__(control, **options)
        self.messages = messages
        flags = options.get("script_flags")
        if flags is None:
            flags = not type(control).__module__.startswith("fakeredis")
        self._admit = control.register_script(cs.C_ADMIT if flags else cs.C_ADMIT.removeprefix("#!lua\n"))
        self._finish_control = control.register_script(cs.C_FINISH)
        self._forget = control.register_script(cs.C_FORGET)
        self._m_create = messages.register_script(cs.M_CREATE)
        self._m_claim = messages.register_script(cs.M_CLAIM)
        self._append = messages.register_script(cs.APPEND)
        self._m_finish = messages.register_script(cs.M_FINISH)
        self._m_delete = messages.register_script(cs.M_DELETE)
        self._flag_cancel = messages.register_script(lua.FLAG_CANCEL)

    # -- create ------------------------------------------------------------

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
        """As ``MessageStore.create``, in two steps: admission and task on the control Redis, then
        the message on the cluster (see the module's docstring for what a crash between leaves)."""
        keys = message_keys(message_id)
        if self.messages.exists(keys.status):
            return Admission("exists", message_id)
        body = json.dumps(request, separators=(",", ":"))
        epoch = str(fields.get("epoch") or secrets.token_hex(8))
        idem_key = keys_mod.idempotency(tenant, idempotency[0]) if idempotency else ""
        outcome, detail = self._admit_call(message_id, body, tenant, idem_key, idempotency, limits, task)
        if outcome == "idempotent":
            return self._repeat(str(detail), body, fields, tenant, idem_key, idempotency)
        if outcome == "limited":
            return Admission("limited", message_id, int(detail) / 1000)
        if outcome != "created":
            return Admission(str(outcome), message_id)
        return self._write(message_id, body, fields, tenant, idem_key, epoch)

    def _admit_call(
        self,
        message_id: str,
        body: str,
        tenant: str,
        idem_key: str,
        idempotency: tuple[str, str] | None,
        limits: Limits,
        task: TaskMessage | None,
    ) -> Any:
        capacity = (limits.rate_burst or limits.rate_per_minute) if limits.rate_per_minute else 0
        control_keys = [
            PENDING,
            tenant_active(tenant),
            rate_bucket(tenant),
            tenant_stored(tenant),
            tenant_bytes(tenant),
        ]
        control_keys += [task.list_key] if task else []
        control_keys += [idem_key] if idem_key else []
        return self._admit(
            keys=control_keys,
            args=[
                len(body.encode()),
                self.active_ttl_seconds,
                f"{idempotency[1]} {message_id}" if idempotency else "",
                limits.max_queue_depth,
                limits.max_concurrent,
                time.time(),
                message_id,
                capacity,
                limits.rate_per_minute / 60,
                task.payload if task else "",
                limits.max_stored_bytes,
            ],
        )

    def _write(
        self, message_id: str, body: str, fields: FieldValues, tenant: str, idem_key: str, epoch: str
    ) -> Admission:
        """The message half of a create: status and request, in the message's slot."""
        keys = message_keys(message_id)
        now, unix_now = now_iso(), time.time()
        status = {
            "status": PENDING_STATUS,
            "created_at": now,
            "updated_at": now,
            "created_ts": unix_now,
            "tenant": tenant,
            "idem_key": idem_key,
            **fields,
            "epoch": epoch,
        }
        outcome, stored_epoch = self._m_create(
            keys=[keys.status, keys.request, keys.events],
            args=[body, self.active_ttl_seconds, *_flatten(status)],
        )
        if outcome == "created" or stored_epoch == epoch:  # (a resent call finds its own write)
            return Admission("created", message_id, epoch=epoch)
        return Admission("exists", message_id)

    def _repeat(
        self,
        stored: str,
        body: str,
        fields: FieldValues,
        tenant: str,
        idem_key: str,
        idempotency: tuple[str, str] | None,
    ) -> Admission:
        """A call whose Idempotency-Key was seen: the first call's id, after finishing that call's
        create if it stopped between its halves (its task is queued, its message not written)."""
        assert idempotency is not None
        digest, _, first_id = stored.partition(" ")
        if digest != idempotency[1]:
            return Admission("conflict", first_id)
        if not self.messages.exists(message_keys(first_id).status) and self.redis.zscore(PENDING, first_id):
            self._write(first_id, body, fields, tenant, idem_key, secrets.token_hex(8))
        return Admission("idempotent", first_id)

    # -- claim -------------------------------------------------------------

    def claim(
        self, message_id: str, worker: str, *, owner: str, lease_ms: int, max_resumes: int, pid: int = 0
    ) -> Claim:
        """As ``MessageStore.claim``. The message is listed as running before the claim (the
        reaper finds a claim cut short there) and leaves pending after a start. A message admitted
        but not written yet is waited for (``NOT_YET_SECONDS``), then dropped."""
        keys = message_keys(message_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(RUNNING, {message_id: time.time() + lease_ms / 1000})
        pipe.expire(RUNNING, self.active_ttl_seconds)
        pipe.execute()
        deadline = time.monotonic() + NOT_YET_SECONDS
        pause = 0.02
        while True:
            outcome, *rest = self._m_claim(
                keys=[keys.status, keys.lock, keys.request],
                args=[now_iso(), worker, owner, lease_ms, max_resumes, pid],
            )
            if outcome == "start":
                self.redis.zrem(PENDING, message_id)
            if outcome != "gone" or self.redis.zscore(PENDING, message_id) is None:
                break
            if time.monotonic() + pause > deadline:  # the create never finished: release it
                tenant = tenant_of(message_id)
                self._forget(keys=[RUNNING, PENDING, *_tenant_keys(tenant)], args=[message_id])
                break
            time.sleep(pause)  # (not yet written: its create is between its two halves)
            pause = min(pause * 2, 1.0)
        if not rest:
            return Claim(str(outcome))
        request, flat = rest[0], rest[1:]
        status = dict(zip(flat[::2], flat[1::2], strict=True))
        return Claim(str(outcome), status, json.loads(request) if request else None)

    # -- append, finish ----------------------------------------------------

    def append(
        self,
        message_id: str,
        events: Sequence[ev.Event],
        fields: FieldValues | None = None,
        *,
        owner: str = "",
        lease_ms: int = 0,
    ) -> int:
        """As ``MessageStore.append``; the new entries also wake the tail readers."""
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
                    keys.wake,
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
        """As ``MessageStore.finish``: the message half (the truth), then the control half
        (indexes, the tenant's slot, the idempotency record's retention)."""
        assert status in TERMINAL_STATUSES
        keys = message_keys(message_id)
        fields = fields or {}
        script_keys = [keys.status, keys.events, keys.request, keys.cancel, keys.lock]
        args = [
            self.retention_seconds,
            self.stream_maxlen,
            status,
            expected,
            now_iso(),
            owner,
            len(fields),
            *_flatten(fields),
            *_flatten_events(events),
            keys.wake,
        ]
        if wait_ms > 0:
            after, tenant, idem = self._finish_waiting(keys.status, script_keys, args, wait_ms)
        else:
            after, tenant, idem = self._m_finish(keys=script_keys, args=args)
        if after in TERMINAL_STATUSES:
            self._finish_control(
                keys=[RUNNING, PENDING, *_tenant_keys(tenant or ANONYMOUS), *([idem] if idem else [])],
                args=[message_id, self.retention_seconds],
            )
        return str(after) if after else None

    def _finish_waiting(self, key: str, script_keys: list[str], args: list[Any], wait_ms: int) -> Any:
        """The message half of ``finish``, then ``WAIT 1`` on the same connection to the slot's
        primary (a cluster client would send the ``WAIT`` elsewhere)."""
        node = self.messages.get_node_from_key(key)
        pipe = self.messages.get_redis_connection(node).pipeline(transaction=False)
        self._m_finish(keys=script_keys, args=args, client=pipe)
        pipe.wait(1, wait_ms)
        try:
            return pipe.execute()[0]
        except redis.ResponseError as exc:
            if not str(exc).startswith(("MOVED", "ASK")):
                raise
        return self._m_finish(keys=script_keys, args=args)  # the slot moved: nothing ran there

    # -- delete ------------------------------------------------------------

    def delete(self, message_id: str) -> bool:
        """As ``MessageStore.delete``: the message and its tombstone on the cluster, then the
        indexes, the tenant's counters and the idempotency record on the control Redis."""
        keys = message_keys(message_id)
        existed, tenant, idem = self._m_delete(
            keys=[keys.status, keys.events, keys.request, keys.lock, keys.cancel],
            args=[TOMBSTONE, TOMBSTONE_TTL_MS, keys.wake],
        )
        if existed:
            self._forget(
                keys=[RUNNING, PENDING, *_tenant_keys(tenant or ANONYMOUS), *([idem] if idem else [])],
                args=[message_id],
            )
        return bool(existed)


class ClusterLeases(Leases):
    """Leases whose locks live on the cluster and whose ``running`` index lives on the control
    Redis; the reaper also repairs index entries a crash between two halves left behind."""

    def __init__(self, store: ClusterMessageStore, lease_seconds: float) -> None:
        super().__init__(store.redis, lease_seconds)
        self.store = store
        self._m_renew = store.messages.register_script(cs.M_RENEW)
        self._m_reap_read = store.messages.register_script(cs.M_REAP_READ)

    def renew(self, message_id: str, owner: str) -> bool:
        """Extend ``owner``'s lock (cluster), then its ``running`` score (control)."""
        if not self._m_renew(keys=[message_keys(message_id).lock], args=[owner, self.lease_ms]):
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
            status, pttl, queue, band = self._m_reap_read(keys=[keys.status, keys.lock])
            if status not in (PROCESSING, PENDING_STATUS):
                self._drop(message_id, status)
            elif status == PROCESSING and int(pttl) > 0:
                self.redis.zadd(RUNNING, {message_id: now + int(pttl) / 1000})
            else:
                self.redis.zadd(RUNNING, {message_id: now + grace})
                found.append(Requeue(message_id, str(queue), int(band or 0)))
        self.repair_pending(limit=limit)
        return found

    def _drop(self, message_id: str, status: str) -> None:
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
                self._drop(message_id, status or "")
                repaired += 1
        return repaired


def store_for(
    settings: Settings, control: redis.Redis, name: str, *, resend: bool = True, **options: Any
) -> MessageStore:
    """The message store of this deployment: ``ClusterMessageStore`` with
    ``SLUICE_STORE_CLUSTER_NODES``, else ``MessageStore`` on ``control`` alone. ``options``: the
    store's retention and caps."""
    if not settings.store_cluster_nodes:
        return MessageStore(control, **options)
    messages = store_client(settings, control, name, resend=resend)
    return ClusterMessageStore(control, messages, **options)


def leases_for(store: MessageStore, lease_seconds: float) -> Leases:
    """The lease keeper that matches ``store``."""
    if isinstance(store, ClusterMessageStore):
        return ClusterLeases(store, lease_seconds)
    return Leases(store.redis, lease_seconds)
