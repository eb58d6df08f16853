"""A broker channel whose transport Celery already detached raises a connection error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from kombu.transport import redis as kombu_redis

from shared.settings import Settings
from workers.celery_app import create_celery


def test_detached_channel_raises_a_connection_error_not_attribute_error():
    """After the worker app is built, kombu's Redis channel with no transport (or a transport
    whose client is gone) raises ``redis.ConnectionError``, which Celery recovers from."""
    create_celery(Settings())
    for detached in (
        SimpleNamespace(connection=None),
        SimpleNamespace(connection=SimpleNamespace(client=None)),
    ):
        with pytest.raises(redis.ConnectionError):
            kombu_redis.Channel._connparams(detached)
