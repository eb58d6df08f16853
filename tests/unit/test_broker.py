"""The task message the API builds is the one Celery's ``send_task`` writes, and is pushed only on create."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from celery import Celery

from shared.broker import TaskMessages
from shared.celery_config import CORRELATION_HEADER, GENERATE_TASK, celery_config
from shared.keys import broker_list
from shared.settings import Settings
from shared.store import Limits

#: Fields that differ between any two messages (ids, tags) or producers (the reply queue id).
PER_MESSAGE = {
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "origin"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
    ("properties", "reply_to"),
}


def _decoded(raw: str) -> dict:
    """A broker message as stored, with its base64 body decoded."""
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _celery_message(
    redis_url: str, queue: str, band: int, message_id: str, correlation: str, kwargs: dict | None = None
) -> str:
    """What Celery's own ``send_task`` pushes, as the API used to send it."""
    app = Celery("sluice-api", set_as_current=False)
    app.conf.update(celery_config(Settings(redis_url=redis_url)))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        app.send_task(
            GENERATE_TASK,
            args=[message_id],
            kwargs=kwargs,
            queue=queue,
            priority=band,
            headers={CORRELATION_HEADER: correlation},
        )
        raw = client.rpop(broker_list(queue, band))
        assert raw is not None, "send_task pushed to another list"
        return raw
    finally:
        client.close()
        app.close()


@pytest.mark.parametrize(
    ("band", "correlation", "route"),
    [(0, "", ""), (5, 'req-42 "quoted" ü', ""), (9, "x", ""), (5, "", "sluice.local.w.w1@host")],
)
def test_message_equals_celerys_own_field_by_field(redis_url, band, correlation, route):
    """Every field but ids and tags equals Celery's, and both go to the same kombu list."""
    queue, message_id = "sluice.test-broker", "msg_Abc-123_x"
    kwargs = {"route": route} if route else None
    theirs = _decoded(_celery_message(redis_url, queue, band, message_id, correlation, kwargs))
    task = TaskMessages().generate(message_id, queue, band, correlation, route=route)
    assert task.list_key == broker_list(queue, band)
    ours = _decoded(task.payload)
    assert ours.keys() == theirs.keys()
    for section in ("headers", "properties"):
        assert ours[section].keys() == theirs[section].keys(), section
        for name, value in theirs[section].items():
            if (section, name) not in PER_MESSAGE:
                assert ours[section][name] == value, f"{section}.{name}"
    for name in ("body", "content-encoding", "content-type"):
        assert ours[name] == theirs[name], name
    assert ours["headers"]["origin"].startswith("gen")
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]


def test_each_message_gets_fresh_ids():
    """Two messages from one producer never share a task id or a delivery tag."""
    messages = TaskMessages()
    first, second = (_decoded(messages.generate("m", "q", 5).payload) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def _queued(store, queue: str = "q", band: int = 3) -> list[str]:
    return [
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
        for raw in store.redis.lrange(broker_list(queue, band), 0, -1)
    ]


def _create(store, message_id, **kwargs):
    task = TaskMessages().generate(message_id, "q", 3)
    return store.create(
        message_id, {"messages": []}, {"model": "x", "queue": "q", "band": 3}, task=task, **kwargs
    )


def test_create_queues_the_task_with_the_message(store):
    """A created message's task waits in its kombu list, in the same step as the status."""
    assert _create(store, "m1").outcome == "created"
    assert store.get_field("m1", "status") == "pending"
    assert _queued(store) == ["m1"]


def test_refused_creates_queue_nothing(store):
    """exists, idempotent, conflict, overloaded, busy and limited push no task."""
    assert _create(store, "m1", idempotency=("k", "b1")).outcome == "created"
    assert _create(store, "m1").outcome == "exists"
    assert _create(store, "m2", idempotency=("k", "b1")).outcome == "idempotent"
    assert _create(store, "m3", idempotency=("k", "b2")).outcome == "conflict"
    assert _create(store, "m4", limits=Limits(max_queue_depth=1)).outcome == "overloaded"
    assert _create(store, "m5", limits=Limits(max_concurrent=1)).outcome == "busy"
    assert _create(store, "m6", tenant="t", limits=Limits(rate_per_minute=1)).outcome == "created"
    assert _create(store, "m7", tenant="t", limits=Limits(rate_per_minute=1)).outcome == "limited"
    assert _queued(store) == ["m6", "m1"]
    for message_id in ("m2", "m3", "m4", "m5", "m7"):
        assert store.get_status(message_id) is None


def test_create_works_after_redis_forgot_its_scripts(store):
    """A create after SCRIPT FLUSH (a restarted Redis) loads the script again and queues its task."""
    assert _create(store, "m1").outcome == "created"
    store.redis.script_flush()
    assert _create(store, "m2").outcome == "created"
    assert _queued(store) == ["m2", "m1"]
