"""The feeder: moves a bounded window of each active batch into the queue, and re-drives webhooks.

One worker at a time runs it (a leader lease in Redis; any worker takes over within a lease
when the leader dies). Each tick walks every active batch in turn (round-robin: each gets
its window, so a small batch interleaves with a huge one): it records the ends of in-flight
messages that nobody recorded yet (the sweep), ends batches past their deadline
(``expired``), and tops each window up. The worker that ends a batch's message also tops
that batch up at once (``after_run``), so a window rarely waits for a tick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.batch_results import ERRORED, EXPIRED, errored_line
from shared.batches import BatchStore
from shared.broker import TaskMessages
from shared.keys import BATCHES_ACTIVE, FEEDER_LEADER, batch_keys, message_keys, public_id
from shared.models import ModelRegistry
from shared.outcomes import Outcomes
from shared.settings import WorkerSettings
from shared.store import TERMINAL_STATUSES
from shared.store.script import ScriptCall, key
from workers.webhooks import claim_lease, dispatch_due

log = logging.getLogger("sluice.worker")

#: The leader's lease; renewed every tick.
LEADER_LEASE_MS = 5000


class Lead(StrEnum):
    """Who leads the feeder after a ``LeadScript``."""

    #: This worker took the lease (nobody held it, or it lapsed).
    TAKEN = "taken"
    #: This worker led already; its lease is renewed.
    RENEWED = "renewed"
    #: Another worker holds the lease.
    OTHER = "other"


@dataclass(frozen=True, kw_only=True)
class LeadScript(ScriptCall[Lead]):
    """Take or renew the feeder's leader lease for ``identity``, unless another worker holds it."""

    leader_key: str = key()
    identity: str
    lease_ms: int

    BODY = """
local holder = redis.call('GET', leader_key)
if holder and holder ~= identity then return 'other' end
redis.call('SET', leader_key, identity, 'PX', lease_ms)
return holder and 'renewed' or 'taken'
"""

    def parse(self, reply: Any) -> Lead:
        """Who leads now."""
        return Lead(reply)


@dataclass
class Feeder:
    """Feeds batches and dispatches webhooks for one worker process."""

    outcomes: Outcomes
    registry: ModelRegistry
    tasks: TaskMessages
    settings: WorkerSettings
    identity: str
    #: Where the next tick starts in the list of active batches (it moves by one every tick).
    turn: int = 0

    @property
    def batches(self) -> BatchStore:
        return self.outcomes.batches

    def tick(self, app: Any = None) -> None:
        """One round over every active batch, then the due webhook deliveries (leader only)."""
        lead = LeadScript(leader_key=FEEDER_LEADER, identity=self.identity, lease_ms=LEADER_LEASE_MS)
        if self.outcomes.store.scripts.run(lead) is Lead.OTHER:
            return
        active = self.batches.active()
        self.turn = (self.turn + 1) % max(1, len(active))
        for sid in active[self.turn :] + active[: self.turn]:
            with contextlib.suppress(Exception):  # one broken batch must not stop the others
                self.visit(sid)
        if app is not None:
            dispatch_due(self.outcomes.hooks, app, lease=claim_lease(self.settings.webhook_timeout_seconds))

    def visit(self, sid: str) -> None:
        """Sweep, expire and top up one batch."""
        meta = self.batches.redis.hgetall(batch_keys(sid).meta)
        if not meta:
            self.batches.redis.zrem(BATCHES_ACTIVE, sid)
            return
        self.sweep(sid)
        if meta.get("status") == "in_progress" and time.time() > float(meta.get("expires_ts") or "inf"):
            self.stop(sid, meta.get("tenant") or "", EXPIRED)
            return
        self.batches.feed(sid, self.outcomes.store, self.tasks, self.registry)

    def sweep(self, sid: str) -> None:
        """Record every in-flight message of the batch that ended (or vanished) unrecorded."""
        inflight = self.batches.inflight(sid)
        pipe = self.outcomes.store.messages.pipeline(transaction=False)  # (a Redis Cluster in cluster mode)
        for message_sid in inflight:
            pipe.hget(message_keys(message_sid).status, "status")
        for message_sid, state in zip(inflight, pipe.execute() if inflight else [], strict=True):
            if state is None:
                self._record_vanished(sid, message_sid)
            elif state in TERMINAL_STATUSES:
                self.outcomes.message_ended(message_sid)

    def _record_vanished(self, sid: str, message_sid: str) -> None:
        """A message deleted (or expired) before it ended: its request counts as errored."""
        custom_id = public_id(message_sid).partition(".")[2]
        index = self.batches.redis.lpos(batch_keys(sid).custom_ids, custom_id)
        tenant = self.batches.redis.hget(batch_keys(sid).meta, "tenant") or ""
        line = errored_line("the request's message was deleted or expired before it ended")
        self.outcomes.record(sid, message_sid, int(index or 0), ERRORED, line, tenant)

    def stop(self, sid: str, tenant: str, ending: str) -> None:
        """End the feed of a batch (expired) and cancel what is in flight."""
        stopped = self.batches.stop(sid, ending)
        if stopped is None:
            return
        if stopped.ended:
            self.outcomes.batch_ended(sid, tenant)
        for message_sid in stopped.inflight:
            self.outcomes.store.cancel(message_sid)
            self.outcomes.message_ended(message_sid)


class FeederThread:
    """Runs ``Feeder.tick`` every ``SLUICE_BATCH_FEED_INTERVAL_SECONDS`` in a daemon thread."""

    def __init__(self, feeder: Feeder, app: Any = None) -> None:
        self.feeder = feeder
        self.app = app
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sluice-feeder", daemon=True)

    def _run(self) -> None:
        interval = self.feeder.settings.batch_feed_interval_seconds
        failing = False
        while not self.stopped.wait(interval):
            try:
                self.feeder.tick(self.app)
                failing = False
            except Exception:  # Redis down: the next tick tries again; said once per outage
                if not failing:
                    log.warning("feeder tick failed", exc_info=True)
                failing = True

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=2)
