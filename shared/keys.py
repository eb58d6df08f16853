"""Every Redis key Sluice writes, built in one place.

All keys of one message share the hash tag ``{<message_id>}`` so that they
land in one Redis Cluster slot and one Lua script may touch them all.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "sluice"

#: Sorted set of worker hostnames scored by their last heartbeat (unix seconds).
WORKERS = f"{PREFIX}:workers"
#: A worker counts as alive while its heartbeat is younger than this.
WORKER_ALIVE_SECONDS = 15
#: Sorted set of pending message ids scored by creation time: the honest queue depth.
PENDING = f"{PREFIX}:pending"
#: Sorted set of processing message ids scored by when their lock lease runs out.
RUNNING = f"{PREFIX}:running"


def tenant_active(tenant: str) -> str:
    """Sorted set of a tenant's pending and processing message ids (its concurrency)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:active"


def rate_bucket(tenant: str) -> str:
    """Hash: a tenant's token bucket (tokens, last refill time)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:rate"


def idempotency(tenant: str, key_digest: str) -> str:
    """String: ``<body digest> <message_id>`` of the first call with this Idempotency-Key."""
    return f"{PREFIX}:idem:{{{tenant}}}:{key_digest}"


#: Glob that matches the status hash of every message (for SCAN-based counts).
STATUS_PATTERN = f"{PREFIX}:msg:*:status"


@dataclass(frozen=True)
class MessageKeys:
    """The keys of one message."""

    message_id: str

    @property
    def _base(self) -> str:
        return f"{PREFIX}:msg:{{{self.message_id}}}"

    @property
    def status(self) -> str:
        """Hash: status, timestamps and metadata."""
        return f"{self._base}:status"

    @property
    def request(self) -> str:
        """String: the validated request body as JSON."""
        return f"{self._base}:request"

    @property
    def events(self) -> str:
        """Stream: the message's events, one field ``d`` = the event's JSON (``type`` first)."""
        return f"{self._base}:events"

    @property
    def cancel(self) -> str:
        """String flag: set when a cancel was asked for."""
        return f"{self._base}:cancel"

    @property
    def lock(self) -> str:
        """String with a lease: the worker that may write the stream."""
        return f"{self._base}:lock"

    def all(self) -> tuple[str, ...]:
        """Every key of the message, for TTLs and deletion."""
        return (self.status, self.request, self.events, self.cancel, self.lock)


def message_keys(message_id: str) -> MessageKeys:
    """The keys of ``message_id``."""
    return MessageKeys(message_id)


#: kombu's separator between a queue name and its priority band (``broker_transport_options.sep``).
BROKER_SEP = ":"


def broker_list(queue: str, band: int) -> str:
    """The Redis list where kombu keeps ``queue``'s messages of kombu priority ``band``.

    Band 0 is the bare queue name; band N > 0 is ``<queue>:N`` (kombu's ``_q_for_pri``).
    """
    return f"{queue}{BROKER_SEP}{band}" if band else queue


#: The tenant of everything created while auth is off; its storage ids are the public ids.
ANONYMOUS_TENANT = "anonymous"


def scoped_id(tenant: str, public: str) -> str:
    """The storage id of ``public`` in ``tenant``: the public id itself for ``anonymous``."""
    return public if tenant == ANONYMOUS_TENANT else f"{tenant}/{public}"


def public_id(storage_id: str) -> str:
    """The public id of a storage id (what HTTP bodies and events show)."""
    return storage_id.rpartition("/")[2]


# -- Message Batches (shared/batches.py) ---------------------------------------------------------

#: Sorted set of the storage ids of batches still in progress or canceling, scored by creation:
#: what the feeder walks.
BATCHES_ACTIVE = f"{PREFIX}:batches:active"
#: String with a lease: the worker whose feeder runs now (one at a time).
FEEDER_LEADER = f"{PREFIX}:batches:feeder"


def tenant_batches(tenant: str) -> str:
    """Sorted set of a tenant's batch public ids scored by creation (the list, newest first)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:batches"


@dataclass(frozen=True)
class BatchKeys:
    """The keys of one batch (storage id ``<tenant>/<batch id>``, or the id when anonymous)."""

    batch_id: str

    @property
    def _base(self) -> str:
        return f"{PREFIX}:batch:{{{self.batch_id}}}"

    @property
    def meta(self) -> str:
        """Hash: state, timestamps, counters and the feed cursor."""
        return f"{self._base}:meta"

    @property
    def requests(self) -> str:
        """List: each request's ``params`` JSON, in submission order."""
        return f"{self._base}:requests"

    @property
    def custom_ids(self) -> str:
        """List: each request's ``custom_id``, in submission order."""
        return f"{self._base}:custom_ids"

    @property
    def inflight(self) -> str:
        """Set: storage ids of the batch's messages fed to the queue and not yet recorded."""
        return f"{self._base}:inflight"

    @property
    def results(self) -> str:
        """Hash: request index → its result JSON (the line of the results file, without ``custom_id``)."""
        return f"{self._base}:results"

    def all(self) -> tuple[str, ...]:
        """Every key of the batch, for TTLs and deletion."""
        return (self.meta, self.requests, self.custom_ids, self.inflight, self.results)


def batch_keys(batch_id: str) -> BatchKeys:
    """The keys of the batch whose storage id is ``batch_id``."""
    return BatchKeys(batch_id)


# -- Webhooks (shared/webhooks.py) ---------------------------------------------------------------


def webhook_endpoints(tenant: str) -> str:
    """Hash: endpoint id → the endpoint's JSON (url, events, secret...)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:webhooks"


def webhook_state(tenant: str) -> str:
    """Hash: ``<endpoint id>:<counter>`` → delivery state (attempts, last status...)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:webhook_state"


#: Sorted set of delivery ids scored by when they are next due (the outbox the heartbeat re-drives).
WEBHOOK_OUTBOX = f"{PREFIX}:webhooks:outbox"


def webhook_delivery(delivery_id: str) -> str:
    """Hash: one delivery: tenant, endpoint, event body, attempts."""
    return f"{PREFIX}:webhooks:delivery:{delivery_id}"
