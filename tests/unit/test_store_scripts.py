"""The store's script wrappers: named arguments, generated Lua names, typed results."""

import re

import pytest

from api.limits import StreamSlots, TooManyStreams
from shared import events as ev
from shared.keys import RUNNING, message_keys
from shared.leases import Leases, RenewScript, Requeue
from shared.outcomes import FlagEmittedScript
from shared.store import (
    AdmissionOutcome,
    ClaimOutcome,
    Limits,
    MessageStore,
    Signal,
    Status,
)
from shared.store.admission import CreateScript
from shared.store.appends import AppendScript, FinishScript
from shared.store.claims import ClaimScript
from shared.store.removal import DeleteScript, FlagCancelScript
from shared.store.script import ScriptCall

BODY = {"model": "default", "messages": []}
ALL_SCRIPTS = [
    CreateScript,
    ClaimScript,
    AppendScript,
    FinishScript,
    FlagCancelScript,
    DeleteScript,
    RenewScript,
]


def _create(store: MessageStore, message_id: str = "m1", **kwargs):
    return store.create(message_id, BODY, {"model": "default", "queue": "q", "band": 2}, **kwargs)


def _claim(store: MessageStore, owner: str, message_id: str = "m1", lease_ms: int = 10_000):
    return store.claim(message_id, owner, owner=owner, lease_ms=lease_ms, max_resumes=1)


def _create_call(**overrides) -> CreateScript:
    fields = {
        "status_key": "s",
        "request_key": "r",
        "pending_key": "p",
        "active_key": "a",
        "rate_key": "b",
        "events_key": "e",
        "stored_key": "st",
        "sizes_key": "sz",
        "request_json": "{}",
        "ttl": 60,
        "now": 1.5,
        "message_id": "m1",
        "status_fields": {"status": "pending", "model": "x"},
    }
    return CreateScript(**{**fields, **overrides})


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_script_bodies_index_neither_keys_nor_argv(script: type[ScriptCall]):
    """Only the generated header reads KEYS/ARGV by number; a body uses the names (and walks a
    tail from its ``<name>_from``)."""
    assert not re.search(r"\b(KEYS|ARGV)\[\d", script.BODY)
    assert not re.search(r"\bKEYS\b", script.BODY)
    assert "= KEYS[1]" in script.header()


def test_header_names_every_key_and_argument_in_field_order():
    """Keys, then optional keys behind a mask, numbers via tonumber, pairs with their span."""
    header = FinishScript.header().splitlines()
    assert header[0] == "local status_key = KEYS[1]"
    assert "local sizes_key = KEYS[10]" in header
    assert "local retention = tonumber(ARGV[2])" in header
    assert "local new_status = ARGV[4]" in header
    assert "local fields_n = tonumber(ARGV[9])" in header
    assert header[-1] == "local events_from = fields_to + 1"


def test_absent_optional_keys_are_left_out_not_replaced_by_placeholders():
    """Without an idempotency key or a task, KEYS holds only real keys and the mask says so."""
    bare = _create_call()
    assert bare.keys() == ["s", "r", "p", "a", "b", "e", "st", "sz"]
    assert bare.args()[0] == "00"
    full = _create_call(idempotency_key="i", broker_key="q", task_payload="{}")
    assert full.keys()[-2:] == ["i", "q"] and full.args()[0] == "11"
    only_task = _create_call(broker_key="q")
    assert only_task.keys()[-1] == "q" and only_task.args()[0] == "01"


def test_args_carry_pairs_with_their_count_then_the_tail():
    """The pairs go out as count + flat pairs, the tail last, in declaration order."""
    call = AppendScript(
        status_key="s",
        events_key="e",
        cancel_key="c",
        lock_key="l",
        ttl=5,
        maxlen=10,
        fields={"a": 1, "b": "x"},
        events=["E1", "E2"],
    )
    assert call.keys() == ["s", "e", "c", "l"]
    assert call.args() == [5, 10, "", 1, 2, "a", 1, "b", "x", "E1", "E2"]


def test_create_answers_typed_admissions(store: MessageStore):
    """Every admission outcome is an ``AdmissionOutcome``, with its detail decoded."""
    first = _create(store, idempotency=("k", "body1"))
    assert first.outcome is AdmissionOutcome.CREATED and first.epoch
    assert _create(store).outcome is AdmissionOutcome.EXISTS
    repeat = _create(store, "m2", idempotency=("k", "body1"))
    assert (repeat.outcome, repeat.message_id) == (AdmissionOutcome.IDEMPOTENT, "m1")
    assert _create(store, "m3", idempotency=("k", "body2")).outcome is AdmissionOutcome.CONFLICT
    assert _create(store, "m4", limits=Limits(max_queue_depth=1)).outcome is AdmissionOutcome.OVERLOADED
    assert _create(store, "m5", limits=Limits(max_concurrent=1)).outcome is AdmissionOutcome.BUSY
    assert _create(store, "m6", limits=Limits(max_stored_bytes=1)).outcome is AdmissionOutcome.QUOTA
    rate = Limits(rate_per_minute=1)
    assert _create(store, "t/1", tenant="t", limits=rate).outcome is AdmissionOutcome.CREATED
    limited = _create(store, "t/2", tenant="t", limits=rate)
    assert limited.outcome is AdmissionOutcome.LIMITED and 0 < limited.retry_after <= 60


def test_rate_token_answers_seconds(store: MessageStore):
    """A token taken answers 0.0; an empty bucket the seconds until the next one."""
    rate = Limits(rate_per_minute=60)
    assert store.take_rate_token("t", rate) == 0.0
    for _ in range(59):
        store.take_rate_token("t", rate)
    wait = store.take_rate_token("t", rate)
    assert isinstance(wait, float) and 0 < wait <= 1.0


def test_claim_answers_typed_outcomes(store: MessageStore):
    """start, locked, resume, exhausted, the terminal status and gone are ``ClaimOutcome``s."""
    assert _claim(store, "a").outcome is ClaimOutcome.GONE
    _create(store)
    started = _claim(store, "a")
    assert started.outcome is ClaimOutcome.START and started.runs and started.request == BODY
    assert started.status["status"] == "processing"
    locked = _claim(store, "b")
    assert locked.outcome is ClaimOutcome.LOCKED and not locked.runs
    store.redis.delete(message_keys("m1").lock)
    assert _claim(store, "c").outcome is ClaimOutcome.RESUME
    store.redis.delete(message_keys("m1").lock)
    assert _claim(store, "d").outcome is ClaimOutcome.EXHAUSTED
    store.finish("m1", Status.ERROR, [ev.error("api_error", "x")])
    ended = _claim(store, "e")
    assert ended.outcome is ClaimOutcome.ERROR and not ended.runs


def test_append_and_finish_answer_signals_and_statuses(store: MessageStore):
    """append answers a ``Signal``; finish the ``Status`` afterwards, None when nothing exists."""
    _create(store)
    assert store.append("m1", []) is Signal.GONE
    _claim(store, "w")
    assert store.append("m1", [ev.message_start("m1", "d", 1)], owner="w", lease_ms=1000) is Signal.GO_ON
    assert store.append("m1", [], owner="other", lease_ms=1000) is Signal.GONE
    assert store.cancel("m1") is Status.PROCESSING
    assert store.append("m1", []) is Signal.CANCEL_ASKED
    assert store.finish("m1", Status.CANCELLED, [ev.message_stop()]) is Status.CANCELLED
    assert store.finish("m1", Status.COMPLETED, []) is Status.CANCELLED
    assert store.finish("nope", Status.COMPLETED, []) is None


def test_cancel_and_delete_answer_typed_results(store: MessageStore):
    """cancel answers the ``Status`` now (None: no message); delete whether one existed."""
    assert store.cancel("m1") is None
    _create(store)
    assert store.cancel("m1") is Status.CANCELLED
    assert store.delete("m1") is True
    assert store.delete("m1") is False


def test_delete_releases_the_idempotency_key(store: MessageStore):
    """A message created with an Idempotency-Key takes the key with it when deleted."""
    _create(store, idempotency=("k", "b"))
    idem_key = store.get_field("m1", "idem_key")
    assert idem_key and store.redis.exists(idem_key)
    assert store.delete("m1")
    assert not store.redis.exists(idem_key)


def test_renew_and_reap_answer_typed_results(store: MessageStore):
    """renew answers whether the lease is still held; the reaper yields ``Requeue``s."""
    leases = Leases(store.redis, 10)
    _create(store)
    _claim(store, "a")
    assert leases.renew("m1", "a") is True
    assert leases.renew("m1", "b") is False
    store.redis.delete(message_keys("m1").lock)
    store.redis.zadd(RUNNING, {"m1": 0})
    assert leases.due_for_requeue() == [Requeue("m1", "q", 2)]


def test_flag_emitted_is_set_once_and_only_on_an_existing_message(store: MessageStore):
    """The webhook flag answers True the first time only, and never creates a hash."""
    flag = FlagEmittedScript(status_key=message_keys("m1").status)
    assert store.scripts.run(flag) is False
    assert not store.redis.exists(message_keys("m1").status)
    _create(store)
    assert store.scripts.run(flag) is True
    assert store.scripts.run(flag) is False


def test_stream_slots_answer_whether_a_slot_was_taken(store: MessageStore):
    """The acquire script takes slots up to the limit; past it the caller gets a 429."""
    slots = StreamSlots(store.redis, limit=1, lease_seconds=30)
    held = slots.acquire("t")
    assert held is not None
    with pytest.raises(TooManyStreams):
        slots.acquire("t")
    held.release()
    assert slots.acquire("t") is not None
