"""Every Redis key Sluice writes, built in one place.

All keys of one message share the hash tag ``{<storage id>}`` so that they
land in one Redis Cluster slot and one Lua script may touch them all.

Ids live in their tenant's namespace: a message's *storage id* is ``<tenant>/<id>``
(``scoped_id``), so two keys may each own ``order-42`` and neither can see, block or
learn of the other's. The tenant is a 32-hex-digit prefix of the API key's SHA-256
(``api.auth.tenant_of``); ``/`` never occurs in a public id, so the split is unambiguous.
While auth is off every message belongs to ``anonymous`` and the storage id is the
public id itself. Store keys, task arguments and worker logs use storage ids; HTTP
bodies and events use public ids (``public_id``).

Layout (``sluice:`` prefix):

- ``msg:{<sid>}:status|request|events|cancel|lock`` — one message (``MessageKeys``); with
  ``SLUICE_STORE_CLUSTER_NODES`` these (and the sharded channel ``msg:{<sid>}:wake``) live on
  the Redis Cluster, everything else on the control Redis
- ``pending``, ``running``, ``workers`` — sorted sets across all tenants
- ``tenant:{<tenant>}:active|rate|bytes|streams`` — a tenant's concurrency, rate bucket,
  stored bytes and open streams
- ``idem:{<tenant>}:<key digest>`` — Idempotency-Key records, per tenant
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


#: Hash: a worker's private queue → unix time when that worker expects to be free (0 = free now).
WORKER_FREE = f"{PREFIX}:worker_free"


def route_key(prefix: str) -> str:
    """String: the private queue of the worker holding the conversation prefix ``prefix``
    (``shared/routing.py``)."""
    return f"{PREFIX}:route:{prefix}"


def hub_wake(token: str) -> str:
    """Stream an API process's tail reader also reads, so that a write to it wakes the reader."""
    return f"{PREFIX}:hub:wake:{token}"


def tenant_active(tenant: str) -> str:
    """Sorted set of a tenant's pending and processing message ids (its concurrency)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:active"


def tenant_stored(tenant: str) -> str:
    """Sorted set of a tenant's message storage ids scored by when their keys expire (unix s)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:stored"


def tenant_bytes(tenant: str) -> str:
    """Hash: the request bytes each of a tenant's messages stores, and their sum under ``#total``."""
    return f"{PREFIX}:tenant:{{{tenant}}}:bytes"


def tenant_streams(tenant: str) -> str:
    """Sorted set of a tenant's open SSE streams (a token each) scored by their lease's end."""
    return f"{PREFIX}:tenant:{{{tenant}}}:streams"


def rate_bucket(tenant: str) -> str:
    """Hash: a tenant's token bucket (tokens, last refill time)."""
    return f"{PREFIX}:tenant:{{{tenant}}}:rate"


def idempotency(tenant: str, key_digest: str) -> str:
    """String: ``<body digest> <message_id>`` of the first call with this Idempotency-Key."""
    return f"{PREFIX}:idem:{{{tenant}}}:{key_digest}"


#: The tenant of messages created while auth is off (their storage ids are their public ids).
ANONYMOUS = "anonymous"
#: Separates the tenant from the public id in a storage id.
TENANT_SEP = "/"


def scoped_id(tenant: str, message_id: str) -> str:
    """The storage id of ``tenant``'s message ``message_id``."""
    return message_id if tenant == ANONYMOUS else f"{tenant}{TENANT_SEP}{message_id}"


def public_id(storage_id: str) -> str:
    """The id the message's owner knows it by."""
    return storage_id.rpartition(TENANT_SEP)[2]


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

    @property
    def wake(self) -> str:
        """Sharded pub/sub channel (not a key; Redis Cluster mode only): the id of each new stream
        entry, to wake the tail readers. It shares the message's hash slot."""
        return f"{self._base}:wake"

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
