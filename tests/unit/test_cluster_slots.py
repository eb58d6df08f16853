"""Redis Cluster mode: every key of one message shares a hash slot, and every message-half script
is called with keys (and a wake channel) of that one slot only."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from redis.crc import key_slot

from shared import events as ev
from shared.keys import message_keys, scoped_id
from shared.store import COMPLETED
from shared.store import cluster_claim_scripts as claim_scripts
from shared.store import cluster_end_scripts as end_scripts
from shared.store import cluster_lease_scripts as lease_scripts
from shared.store.cluster import ClusterMessageStore
from shared.store.cluster_leases import ClusterLeases
from shared.store.cluster_scripts import MESSAGE_SCRIPTS

IDS = ["m1", "msg_AbC-123_xyz", scoped_id("f" * 32, "order-42"), scoped_id("0" * 32, "a{b}c")]

#: What the fake cluster answers each message-half script.
REPLIES: dict[str, Any] = {
    claim_scripts.MessageCreateScript.source(): ["created", ""],
    claim_scripts.MessageClaimScript.source(): ["start", "{}", "status", "processing"],
    end_scripts.WakingAppendScript.source(): 0,
    end_scripts.MessageFinishScript.source(): [COMPLETED, "", ""],
    end_scripts.MessageDeleteScript.source(): ["pending", "", ""],
    lease_scripts.MessageRenewScript.source(): 1,
    lease_scripts.MessageReapReadScript.source(): ["completed", -2, "", "0"],
}


def _slot(name: str) -> int:
    return key_slot(name.encode())


@pytest.mark.parametrize("message_id", IDS)
def test_every_key_of_a_message_maps_to_one_slot(message_id):
    """status, request, events, cancel, lock and the wake channel: one slot per message."""
    keys = message_keys(message_id)
    assert len({_slot(key) for key in (*keys.all(), keys.wake)}) == 1


class FakeCluster:
    """Records each script call: which script, which keys, which channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], list[Any]]] = []

    def register_script(self, source: str):
        def call(keys: list[str], args: list[Any], client: Any = None) -> Any:
            self.calls.append((source, keys, args))
            return REPLIES.get(source, "processing")

        return call

    def exists(self, *_: str) -> int:
        return 0

    def hget(self, *_: str) -> str:
        return "processing"


def test_message_half_scripts_declare_only_keys_of_one_slot():
    """Every script sent to the cluster, for every operation, names one message's keys only."""
    cluster = FakeCluster()
    store = ClusterMessageStore(fakeredis.FakeRedis(decode_responses=True), cluster, script_flags=False)
    leases = ClusterLeases(store, 1.0)
    for message_id in IDS:
        store.create(message_id, {"model": "m"}, {"model": "m"})
        store.claim(message_id, "w", owner="o", lease_ms=1000, max_resumes=1)
        store.append(message_id, [ev.text_delta(0, "x")], owner="o", lease_ms=1000)
        store.finish(message_id, COMPLETED, [ev.message_stop()])
        store.cancel(message_id)
        store.delete(message_id)
        leases.renew(message_id, "o")
    sent = {source for source, _, _ in cluster.calls}
    reap_read = lease_scripts.MessageReapReadScript.source()
    assert {call.source() for call in MESSAGE_SCRIPTS} - {reap_read} <= sent
    for source, keys, args in cluster.calls:
        names = [*keys, *(arg for arg in args if isinstance(arg, str) and arg.endswith(":wake"))]
        assert len({_slot(name) for name in names}) == 1, (source[:40], names)


def test_message_half_scripts_name_no_key_of_their_own():
    """No message-half script builds a key name itself (it could land in another slot)."""
    for call in MESSAGE_SCRIPTS:
        assert "sluice:" not in call.source(), call.__name__
