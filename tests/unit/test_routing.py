"""Conversation routing: the prefix hash both sides compute, and the decisions around it."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from api.routing import holder_for
from shared.keys import PENDING
from shared.models import ModelSpec
from shared.routing import (
    RouteTable,
    conversation_prefix,
    defer,
    next_prefix,
    now,
    private_queue,
    shared_queue,
)
from shared.store import MessageStore
from workers.affinity import wait_for_holder

LLAMA = ModelSpec(id="default", provider="llama_cpp")


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _first() -> dict:
    return {"model": "default", "system": [{"type": "text", "text": "Be brief."}], "messages": [_user("Hi")]}


def test_next_turn_prefix_is_what_the_worker_holds():
    """The API's prefix of turn 2 equals the worker's next prefix after turn 1's answer."""
    first = _first()
    second = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": [{"type": "text", "text": "Hello there."}]},
            _user("How are you?"),
        ],
    }
    assert conversation_prefix("default", second) == next_prefix("default", first, "Hello there.")
    assert conversation_prefix("default", second) != next_prefix("default", first, "Hello!")
    assert conversation_prefix("other", second) != conversation_prefix("default", second)


def test_first_turns_and_prefills_have_no_prefix():
    """Nothing to continue: a single user turn, or a request ending with an assistant prefill."""
    assert conversation_prefix("default", _first()) is None
    prefill = {**_first(), "messages": [_user("Hi"), {"role": "assistant", "content": []}]}
    assert conversation_prefix("default", prefill) is None
    assert next_prefix("default", prefill, "x") is None


def test_private_queue_names():
    """A private queue names its worker and leads back to the shared queue."""
    queue = private_queue("sluice.local", "w1@host")
    assert queue == "sluice.local.w.w1@host" and shared_queue(queue) == "sluice.local"


@pytest.mark.parametrize(
    ("free_at", "waited", "expected"),
    [
        (0.0, 0.0, True),  # the holder is free: leave it the message
        (100.05, 0.0, True),  # free within the wait
        (100.5, 0.0, False),  # busy for longer than the wait: run it here
        (0.0, 0.1, False),  # waited long enough: run it here
        (None, 0.0, False),  # unknown holder: never wait for it
    ],
)
def test_defer_decision(free_at, waited, expected):
    """Wait for the holder only while it is free or nearly so, and never longer than the wait."""
    assert defer(100.0, free_at, waited, 0.1) is expected


def test_the_api_finds_the_holder_only_for_continuing_conversations_of_stateful_models():
    """A holder is looked up for turns >= 2 of a stateful model, and routing 0 ms turns it off."""
    client = fakeredis.FakeRedis(decode_responses=True)
    first = _first()
    prefix = next_prefix("default", first, "Hello there.")
    assert prefix is not None
    RouteTable(client).hold(prefix, "sluice.local.w.w1@host")
    second = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": [{"type": "text", "text": "Hello there."}]},
            _user("More?"),
        ],
    }
    assert holder_for(client, 100, 2000, LLAMA, second) == "sluice.local.w.w1@host"
    assert holder_for(client, 0, 2000, LLAMA, second) == ""
    assert holder_for(client, 100, 2000, ModelSpec(id="default", provider="scripted"), second) == ""
    assert holder_for(client, 100, 2000, LLAMA, first) == ""


def test_no_routing_past_a_backlog_that_waited_too_long():
    """While the oldest waiting message has waited longer than max_skip, nothing overtakes it."""
    client = fakeredis.FakeRedis(decode_responses=True)
    store = MessageStore(client)
    first = _first()
    prefix = next_prefix("default", first, "Hi!")
    assert prefix is not None
    RouteTable(client).hold(prefix, "sluice.local.w.w1@host")
    second = {**first, "messages": [*first["messages"], {"role": "assistant", "content": []}, _user("?")]}
    second["messages"][1]["content"] = [{"type": "text", "text": "Hi!"}]
    _pending(store, "old")
    client.zadd(PENDING, {"old": now() - 5})
    assert holder_for(client, 100, 2000, LLAMA, second) == ""
    client.zadd(PENDING, {"old": now() - 0.5})
    assert holder_for(client, 100, 2000, LLAMA, second) == "sluice.local.w.w1@host"


def _pending(store: MessageStore, message_id: str) -> None:
    store.create(message_id, {"messages": []}, {"model": "default"})


def test_a_worker_leaves_a_message_to_its_free_holder():
    """The holder is free and claims the message meanwhile: the other worker's copy steps aside."""
    store = MessageStore(fakeredis.FakeRedis(decode_responses=True))
    _pending(store, "m1")
    holder = private_queue("sluice.local", "w1@h")
    RouteTable(store.redis).busy_until(holder, 0)
    claimed = threading.Timer(
        0.02, lambda: store.claim("m1", "w1@h", owner="o", lease_ms=1000, max_resumes=1)
    )
    claimed.start()
    assert wait_for_holder(store, "m1", holder, "w2@h", 5.0) == "taken"
    claimed.join()


def test_a_busy_holder_is_not_waited_for():
    """The holder is busy for longer than the wait: the other worker runs the message at once."""
    store = MessageStore(fakeredis.FakeRedis(decode_responses=True))
    _pending(store, "m2")
    holder = private_queue("sluice.local", "w1@h")
    RouteTable(store.redis).busy_until(holder, 4_000_000_000)
    assert wait_for_holder(store, "m2", holder, "w2@h", 5.0) == "ran_here"


def test_a_free_holder_that_never_comes_is_waited_for_at_most_the_wait():
    """A free holder that does not take the message: the other worker runs it after the wait."""
    store = MessageStore(fakeredis.FakeRedis(decode_responses=True))
    _pending(store, "m3")
    holder = private_queue("sluice.local", "w1@h")
    RouteTable(store.redis).busy_until(holder, 0)
    assert wait_for_holder(store, "m3", holder, "w2@h", 0.05) == "ran_here"


def test_the_holder_runs_its_own_message_without_waiting():
    """The holder itself never waits."""
    store = MessageStore(fakeredis.FakeRedis(decode_responses=True))
    assert wait_for_holder(store, "m4", private_queue("sluice.local", "w1@h"), "w1@h", 5.0) == "own"
    assert wait_for_holder(store, "m4", "", "w1@h", 5.0) == ""


def test_a_model_worker_consumes_its_private_queue_first(monkeypatch):
    """The private queue of a stateful model's queue comes before the shared one (so it is
    first within each band of the worker's BRPOP); other queues get none."""
    from types import SimpleNamespace

    from shared.settings import Settings
    from workers.celery_app import _consume_private_queues, create_celery

    monkeypatch.delenv("SLUICE_MODELS_FILE", raising=False)
    app = create_celery(Settings())
    app.amqp.queues.select(["sluice.local", "sluice.upstream"])
    _consume_private_queues(sender="w1@h", instance=SimpleNamespace(app=app))
    assert list(app.amqp.queues.consume_from) == ["sluice.local.w.w1@h", "sluice.local", "sluice.upstream"]
