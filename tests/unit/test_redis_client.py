"""The one Redis client factory: URL or Sentinel mode, and the broker address that goes with it."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from shared.celery_config import celery_config
from shared.keys import message_keys
from shared.redis_client import BlockingSentinelConnectionPool, broker_url, redis_client
from shared.settings import Settings, SettingsError, load_settings
from shared.store import MessageStore

SENTINELS = {
    "SLUICE_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26380",
    "SLUICE_REDIS_SENTINEL_MASTER": "prod",
}


def test_sentinel_settings_are_parsed_and_normalised():
    """Addresses are trimmed and checked; the password is kept out of the settings' repr."""
    settings = load_settings({**SENTINELS, "SLUICE_REDIS_PASSWORD": "pw", "SLUICE_REDIS_WAIT_MS": "100"})
    assert settings.redis_sentinels == "10.0.0.1:26379,10.0.0.2:26380"
    assert settings.redis_sentinel_master == "prod"
    assert settings.redis_wait_ms == 100
    assert "pw" not in repr(settings)


@pytest.mark.parametrize("bad", ["10.0.0.1", "host:port", ":26379", "h:70000", "h:1,,h:2"])
def test_malformed_sentinel_addresses_are_refused(bad):
    """Each address must be host:port; the error names the variable."""
    with pytest.raises(SettingsError, match="SLUICE_REDIS_SENTINELS"):
        load_settings({"SLUICE_REDIS_SENTINELS": bad})


def test_url_mode_builds_url_clients():
    """Without sentinels: a plain client, or a bounded blocking pool when asked for one."""
    settings = Settings(redis_url="redis://127.0.0.1:6399/2", redis_password="pw")
    plain = redis_client(settings, "t")
    bounded = redis_client(settings, "t", max_connections=3)
    assert plain.connection_pool.connection_kwargs["db"] == 2
    assert plain.connection_pool.connection_kwargs["password"] == "pw"
    assert isinstance(bounded.connection_pool, redis.BlockingConnectionPool)
    assert bounded.connection_pool.max_connections == 3
    assert broker_url(settings) == "redis://127.0.0.1:6399/2"
    assert "master_name" not in celery_config(settings)["broker_transport_options"]


def test_sentinel_mode_builds_master_clients_and_a_sentinel_broker():
    """With sentinels: master clients (bounded and blocking when asked), and kombu's sentinel URLs
    with the password quoted plus the master name and the sentinels' own password."""
    settings = load_settings({**SENTINELS, "SLUICE_REDIS_PASSWORD": "p@ss/word"})
    plain = redis_client(settings, "t")
    bounded = redis_client(settings, "t", max_connections=4)
    assert type(plain.connection_pool) is SentinelConnectionPool
    assert isinstance(bounded.connection_pool, BlockingSentinelConnectionPool)
    assert isinstance(bounded.connection_pool, redis.BlockingConnectionPool)
    assert bounded.connection_pool.max_connections == 4
    assert bounded.connection_pool.service_name == "prod"
    config = celery_config(settings)
    assert config["broker_url"] == (
        "sentinel://:p%40ss%2Fword@10.0.0.1:26379/0;sentinel://:p%40ss%2Fword@10.0.0.2:26380/0"
    )
    options = config["broker_transport_options"]
    assert options["master_name"] == "prod"
    assert options["sentinel_kwargs"]["password"] == "p@ss/word"
    assert options["queue_order_strategy"] == "priority"


def test_finish_with_wait_returns_the_status_after_waiting_for_a_replica(redis_url):
    """``wait_ms``: the terminal write goes out with ``WAIT 1 <ms>`` on its connection; with no
    replica the wait runs out and the finish still reports the status it set."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = MessageStore(client, retention_seconds=60)
    client.hset(message_keys("msg_wait").status, mapping={"status": "processing", "tenant": "anonymous"})
    assert store.finish("msg_wait", "completed", [], wait_ms=20) == "completed"
    assert store.finish("msg_wait", "error", [], wait_ms=20) == "completed"
    assert client.hget(message_keys("msg_wait").status, "status") == "completed"
    client.delete(*message_keys("msg_wait").all())


def test_a_primary_refusing_writes_reads_as_unavailable(redis_url):
    """``NOREPLICAS`` (a primary short of ``min-replicas-to-write``, as right after a failover)
    comes out as ``redis.ConnectionError`` (the API's 503, a worker's resumable stop), for plain
    commands and scripts alike, and the refused script wrote nothing; reads still work."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    client = redis_client(Settings(redis_url=redis_url), "t", max_connections=2)
    store = MessageStore(client)
    admin.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(redis.ConnectionError, match="NOREPLICAS"):
            client.set("sluice:test:refused", "1")
        with pytest.raises(redis.ConnectionError, match="NOREPLICAS"):
            store.create("msg_refused", {"model": "m"}, {"model": "m"})
        assert client.get("sluice:test:refused") is None
    finally:
        admin.config_set("min-replicas-to-write", 0)
    assert not admin.exists(message_keys("msg_refused").status, message_keys("msg_refused").request)
