"""The one place that builds Redis clients and the Celery broker's address.

Two modes, chosen by settings: ``SLUICE_REDIS_URL`` (one Redis server), or
``SLUICE_REDIS_SENTINELS`` + ``SLUICE_REDIS_SENTINEL_MASTER`` (a Sentinel-managed primary;
every new connection asks the sentinels where the primary is, so after a failover each
client follows by itself). The broker (kombu's ``sentinel://`` transport) and the message
store always talk to the same primary: the submit script pushes the task on it.

With ``SLUICE_STORE_CLUSTER_NODES`` the message store (per-message keys) moves to a Redis
Cluster (``store_client``); everything else stays on the Redis above, the *control* Redis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import MasterDownError, ReadOnlyError, ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from shared.settings import SharedSettings
from shared.settings_parse import parse_addresses

#: How long a client waits for one sentinel before asking the next.
SENTINEL_TIMEOUT_SECONDS = 1.0
#: How much longer than its ``XREAD BLOCK`` a blocking reader waits for the reply.
READ_TIMEOUT_MARGIN_SECONDS = 10.0


#: Replies of a server that cannot take writes right now (a replica, a primary missing replicas
#: for ``min-replicas-to-write``, a replica cut off from its primary): an outage, not a bug.
_NOT_WRITABLE = ("NOREPLICAS", "MASTERDOWN", "READONLY")


class _RefusedWritesAsUnavailable:
    """Turns "cannot take writes now" replies into ``redis.ConnectionError``, so callers treat
    them as the outage they are (the API answers 503, a worker's run stops and is resumed)
    instead of as a failed command. Redis checks before a script's first write, and every
    Sluice script reads before it writes, so such a refusal has written nothing."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            if isinstance(exc, MasterDownError | ReadOnlyError) or str(exc).startswith(_NOT_WRITABLE):
                raise redis.ConnectionError(f"Redis cannot take writes now: {exc}") from exc
            raise


class WritableConnection(_RefusedWritesAsUnavailable, redis.Connection):
    """A TCP connection (URL mode)."""


class WritableSSLConnection(_RefusedWritesAsUnavailable, redis.SSLConnection):
    """A TLS connection (``rediss://``)."""


class WritableUnixConnection(_RefusedWritesAsUnavailable, redis.UnixDomainSocketConnection):
    """A Unix socket connection (``unix://``)."""


class WritableSentinelConnection(_RefusedWritesAsUnavailable, SentinelManagedConnection):
    """A connection to the primary the sentinels name."""


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel-managed pool that makes callers wait for a free connection (a bounded
    pool, like ``redis.BlockingConnectionPool``) instead of opening more."""


def redis_client(
    settings: SharedSettings,
    name: str,
    *,
    max_connections: int | None = None,
    retry_on_timeout: bool = False,
    resend: bool = True,
    socket_timeout: float | None = None,
) -> redis.Redis:
    """A client of the deployment's Redis (decoded replies, keepalive, health checks).

    With ``max_connections`` the pool is bounded and blocking (callers wait up to 30 s for a
    connection); without it, one connection per concurrent caller, never cut short while a
    blocking read waits.

    ``resend=False``: a command whose connection broke is never sent again (redis-py would
    retry it, and a script that did run before the break, e.g. on a primary that died after
    replicating it, would then run twice); the caller sees the error instead.

    ``socket_timeout``: how long a reply may take; a client that blocks in ``XREAD`` must set
    one longer than its block (redis-py's default of 5 s would cut a longer read short).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": retry_on_timeout,
        "client_name": name,
    }
    if settings.redis_password:
        options["password"] = settings.redis_password
    if socket_timeout is not None:
        options["socket_timeout"] = socket_timeout
    if not resend:
        options["retry"] = Retry(NoBackoff(), 0)
    if max_connections is not None:
        options.update(max_connections=max_connections, timeout=30)
    if settings.redis_sentinels:
        pool_class = BlockingSentinelConnectionPool if max_connections is not None else SentinelConnectionPool
        return sentinel(settings).master_for(
            settings.redis_sentinel_master,
            connection_pool_class=pool_class,
            connection_class=WritableSentinelConnection,
            **options,
        )
    options["connection_class"] = _url_connection_class(settings.redis_url)
    if max_connections is not None:
        pool = redis.BlockingConnectionPool.from_url(settings.redis_url, **options)
        return redis.Redis(connection_pool=pool)
    return redis.Redis.from_url(settings.redis_url, **options)


def reader_client(settings: SharedSettings, name: str, *, block_ms: int) -> redis.Redis:
    """A client for blocking reads (``XREAD BLOCK block_ms``): one connection per concurrent
    reader, never cut short while blocked (its socket timeout outlasts the block)."""
    return redis_client(settings, name, socket_timeout=block_ms / 1000 + READ_TIMEOUT_MARGIN_SECONDS)
#: What a cluster client (not a worker's) retries on a lost node or a moved slot: a failover
#: inside the cluster (node timeout + election) takes a few seconds.
CLUSTER_RETRIES = 8


def cluster_client(
    settings: SharedSettings,
    name: str,
    *,
    max_connections: int | None = None,
    resend: bool = True,
    socket_timeout: float | None = None,
) -> RedisCluster:
    """A client of the Redis Cluster that holds the message store (``SLUICE_STORE_CLUSTER_NODES``):
    the same options as ``redis_client`` (decoded replies, keepalive, password, timeouts), one
    pool per node. After a failover inside the cluster it learns the new slot owners by itself
    (MOVED replies, a refresh of the slot map after a lost node).

    ``resend=False`` (workers): a command whose node was lost is never sent again; the caller
    sees the error (``redis.ConnectionError``), as with ``redis_client``."""
    assert settings.store_cluster_nodes, "SLUICE_STORE_CLUSTER_NODES is not set"
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "client_name": name,
        "socket_connect_timeout": 2.0,
    }
    if settings.redis_password:
        options["password"] = settings.redis_password
    if socket_timeout is not None:
        options["socket_timeout"] = socket_timeout
    if max_connections is not None:
        options.update(max_connections=max_connections, connection_pool_class=redis.BlockingConnectionPool)
    retries = CLUSTER_RETRIES if resend else 0
    retry = Retry(ExponentialBackoff(base=0.1, cap=1.0) if resend else NoBackoff(), retries)
    nodes = [ClusterNode(host, port) for host, port in parse_addresses(settings.store_cluster_nodes)]
    return RedisCluster(startup_nodes=nodes, retry=retry, **options)


def store_client(
    settings: SharedSettings,
    control: redis.Redis,
    name: str,
    *,
    max_connections: int | None = None,
    resend: bool = True,
) -> redis.Redis | RedisCluster:
    """Where the message store's per-message keys live: the cluster client with
    ``SLUICE_STORE_CLUSTER_NODES``, else ``control`` itself (one Redis for everything)."""
    if not settings.store_cluster_nodes:
        return control
    return cluster_client(settings, name, max_connections=max_connections, resend=resend)


def _url_connection_class(url: str) -> type[redis.Connection] | type[redis.UnixDomainSocketConnection]:
    if url.startswith("rediss://"):
        return WritableSSLConnection
    if url.startswith("unix://"):
        return WritableUnixConnection
    return WritableConnection


def sentinel(settings: SharedSettings) -> Sentinel:
    """A ``Sentinel`` over ``SLUICE_REDIS_SENTINELS`` (the same password for sentinels and nodes)."""
    assert settings.redis_sentinels, "SLUICE_REDIS_SENTINELS is not set"
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if settings.redis_password:
        sentinel_options["password"] = settings.redis_password
    return Sentinel(parse_addresses(settings.redis_sentinels), sentinel_kwargs=sentinel_options)


def broker_url(settings: SharedSettings) -> str:
    """Celery's ``broker_url``: the Redis URL, or one ``sentinel://`` URL per sentinel
    (kombu's failover syntax, ``;``-separated), carrying the nodes' password."""
    if not settings.redis_sentinels:
        return settings.redis_url
    auth = f":{quote(settings.redis_password, safe='')}@" if settings.redis_password else ""
    hosts = parse_addresses(settings.redis_sentinels)
    return ";".join(f"sentinel://{auth}{host}:{port}/0" for host, port in hosts)


def broker_transport_options(settings: SharedSettings) -> dict[str, Any]:
    """What kombu's sentinel transport needs besides the URL (nothing in URL mode)."""
    if not settings.redis_sentinels:
        return {}
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if settings.redis_password:
        sentinel_options["password"] = settings.redis_password
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": sentinel_options}
