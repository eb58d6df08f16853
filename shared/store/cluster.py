"""The message store with its per-message keys on a Redis Cluster (``SLUICE_STORE_CLUSTER_NODES``).

Two Redis handles: ``messages`` (the cluster: a message's status, request, stream, cancel flag and
lock, all in the slot of its hash tag ``{<storage id>}``) and ``redis`` (the *control* Redis: the
broker, the ``pending``/``running`` indexes, tenant counters, idempotency records). A Lua script
may only touch one slot, so every change that spans both is two calls (``cluster_scripts``),
ordered so that a crash between them never loses an accepted message nor runs one twice:

- create: control half first (rate, idempotency, limits, pending index, the task push), then the
  message. A worker whose claim finds no message yet (``ClaimOutcome.NOT_YET``) tries again for
  ``NOT_YET_SECONDS``, then drops the reservation; a retry of the create with its
  Idempotency-Key writes the message itself.
- claim: listed as running first (so a crash leaves the reaper a trace), then the message half
  (the truth), then out of pending.
- finish, delete (``cluster_ending``): the message half is the truth; the control half follows.
  A crash between them leaves index entries the reaper repairs (``ClusterLeases``, in
  ``cluster_leases``).

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
from shared.broker import TaskMessage
from shared.keys import (
    ANONYMOUS,
    PENDING,
    RUNNING,
    message_keys,
    rate_bucket,
    tenant_active,
    tenant_bytes,
    tenant_stored,
)
from shared.leases import Leases
from shared.records import Admission, AdmissionOutcome, Claim, ClaimOutcome, Limits, now_iso
from shared.redis_client import store_client
from shared.settings import SharedSettings
from shared.store import NO_LIMITS, MessageStore, Signal
from shared.store.base import Status
from shared.store.cluster_claim_scripts import AdmitScript, MessageClaimScript, MessageCreateScript
from shared.store.cluster_end_scripts import WakingAppendScript
from shared.store.cluster_ending import ClusterEndings, tenant_of
from shared.store.cluster_leases import ClusterLeases
from shared.store.cluster_scripts import MESSAGE_SCRIPTS
from shared.store.removal import FlagCancelScript
from shared.store.script import FieldValues, Scripts

#: How long a claim that finds an admitted message not written yet keeps trying.
NOT_YET_SECONDS = 10.0


class ClusterMessageStore(ClusterEndings, MessageStore):
    """``MessageStore`` over two Redis handles: per-message scripts on the cluster, indexes,
    tenant counters and the broker on the control Redis. Create, claim and append are here;
    finish, cancel and delete are ``ClusterEndings`` (``shared.store.cluster_ending``)."""

    def __init__(self, control: redis.Redis, messages: Any, **options: Any) -> None:
        """``messages``: a ``redis.cluster.RedisCluster``; ``options`` as ``MessageStore``'s."""
        super().__init__(control, **options)
        self.messages = messages
        self.message_scripts = Scripts(messages, (*MESSAGE_SCRIPTS, FlagCancelScript), flags=True)

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
        the message on the cluster (see the module's docstring for what a crash between leaves).
        A taken id is refused before anything is counted."""
        if self.messages.exists(message_keys(message_id).status):
            return Admission(AdmissionOutcome.EXISTS, message_id)
        body = json.dumps(request, separators=(",", ":"))
        idem_key = keys_mod.idempotency(tenant, idempotency[0]) if idempotency else None
        capacity = (limits.rate_burst or limits.rate_per_minute) if limits.rate_per_minute else 0
        admit = AdmitScript(
            pending_key=PENDING,
            active_key=tenant_active(tenant),
            rate_key=rate_bucket(tenant),
            stored_key=tenant_stored(tenant),
            sizes_key=tenant_bytes(tenant),
            idempotency_key=idem_key,
            broker_key=task.list_key if task else None,
            request_bytes=len(body.encode()),
            ttl=self.active_ttl_seconds,
            idempotency_value=f"{idempotency[1]} {message_id}" if idempotency else "",
            max_depth=limits.max_queue_depth,
            max_concurrent=limits.max_concurrent,
            now=time.time(),
            message_id=message_id,
            rate_capacity=capacity,
            rate_refill=limits.rate_per_minute / 60,
            task_payload=task.payload if task else "",
            quota=limits.max_stored_bytes,
        )
        admission = self.scripts.run(admit)
        if admission.outcome is AdmissionOutcome.IDEMPOTENT:
            first_id = admission.message_id
            if not self.messages.exists(message_keys(first_id).status) and self.redis.zscore(
                PENDING, first_id
            ):
                self._write(first_id, body, fields, tenant, idem_key)  # the first call stopped halfway
            return admission
        if admission.outcome is not AdmissionOutcome.CREATED:
            return admission
        return self._write(message_id, body, fields, tenant, idem_key)

    def _write(
        self, message_id: str, body: str, fields: FieldValues, tenant: str, idem_key: str | None
    ) -> Admission:
        """The message half of a create: status and request, in the message's slot."""
        keys = message_keys(message_id)
        now = now_iso()
        epoch = str(fields.get("epoch") or secrets.token_hex(8))
        status_fields: dict[str, str | int | float] = {
            "status": Status.PENDING,
            "created_at": now,
            "updated_at": now,
            "created_ts": time.time(),
            "tenant": tenant,
            "idem_key": idem_key or "",
            **fields,
            "epoch": epoch,
        }
        call = MessageCreateScript(
            status_key=keys.status,
            request_key=keys.request,
            events_key=keys.events,
            request_json=body,
            ttl=self.active_ttl_seconds,
            status_fields=status_fields,
        )
        stored_epoch = self.message_scripts.run(call)
        if stored_epoch is None or stored_epoch == epoch:  # (a resent call finds its own write)
            return Admission(AdmissionOutcome.CREATED, message_id, epoch=epoch)
        return Admission(AdmissionOutcome.EXISTS, message_id)

    # -- claim -------------------------------------------------------------

    def claim(
        self, message_id: str, worker: str, *, owner: str, lease_ms: int, max_resumes: int, pid: int = 0
    ) -> Claim:
        """As ``MessageStore.claim``. The message is listed as running before the claim (the
        reaper finds a claim cut short there) and leaves pending after a start. A message admitted
        but not written yet is waited for (``NOT_YET_SECONDS``), then dropped (``GONE``)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(RUNNING, {message_id: time.time() + lease_ms / 1000})
        pipe.expire(RUNNING, self.active_ttl_seconds)
        pipe.execute()
        deadline = time.monotonic() + NOT_YET_SECONDS
        pause = 0.02
        while True:
            claim = self._claim_once(message_id, worker, owner, lease_ms, max_resumes, pid)
            if claim.outcome is not ClaimOutcome.NOT_YET:
                return claim
            if time.monotonic() + pause > deadline:  # the create never finished: release it
                self._forget(message_id, tenant_of(message_id), None)
                return Claim(ClaimOutcome.GONE)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _claim_once(
        self, message_id: str, worker: str, owner: str, lease_ms: int, max_resumes: int, pid: int
    ) -> Claim:
        keys = message_keys(message_id)
        call = MessageClaimScript(
            status_key=keys.status,
            lock_key=keys.lock,
            request_key=keys.request,
            now_iso=now_iso(),
            worker=worker,
            owner=owner,
            lease_ms=lease_ms,
            max_resumes=max_resumes,
            pid=pid,
        )
        claim = self.message_scripts.run(call)
        if claim.outcome is ClaimOutcome.START:
            self.redis.zrem(PENDING, message_id)
        elif claim.outcome is ClaimOutcome.GONE and self.redis.zscore(PENDING, message_id) is not None:
            return Claim(ClaimOutcome.NOT_YET)
        return claim

    # -- append ------------------------------------------------------------

    def append(
        self,
        message_id: str,
        events: Sequence[ev.Event],
        fields: FieldValues | None = None,
        *,
        owner: str = "",
        lease_ms: int = 0,
    ) -> Signal:
        """As ``MessageStore.append``; the new entries also wake the tail readers."""
        keys = message_keys(message_id)
        call = WakingAppendScript(
            status_key=keys.status,
            events_key=keys.events,
            cancel_key=keys.cancel,
            lock_key=keys.lock,
            ttl=self.active_ttl_seconds,
            maxlen=self.stream_maxlen,
            owner=owner,
            lease_ms=lease_ms or 1,
            fields=fields or {},
            events=[ev.encode(event) for event in events],
            wake_channel=keys.wake,
        )
        return self.message_scripts.run(call)


def store_for(
    settings: SharedSettings, control: redis.Redis, name: str, *, resend: bool = True, **options: Any
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
