"""The Redis-backed gauges of ``/metrics``: honest queue depth per band, messages by status."""

from __future__ import annotations

from types import SimpleNamespace

import fakeredis

from api.metrics import RedisCollector, _StatusCount
from shared.keys import broker_list, message_keys
from shared.models import ModelRegistry, ModelSpec


def _collect(client) -> dict[tuple[str, tuple[str, ...]], float]:
    registry = ModelRegistry(
        [
            ModelSpec(id="a", provider="scripted"),
            ModelSpec(id="b", provider="scripted", queue="sluice.upstream"),
        ]
    )
    svc = SimpleNamespace(redis=client, registry=registry)
    collector = RedisCollector(svc, _StatusCount())  # type: ignore[arg-type]
    return {
        (s.name, tuple(s.labels.values())): s.value for family in collector.collect() for s in family.samples
    }


def test_queue_depth_sums_every_priority_list_per_band():
    """Each band's own kombu list is counted, for every queue of the registry."""
    client = fakeredis.FakeRedis(decode_responses=True)
    client.lpush(broker_list("sluice.local", 0), "m1")
    client.lpush(broker_list("sluice.local", 9), "m2", "m3")
    client.lpush(broker_list("sluice.upstream", 5), "m4")
    found = _collect(client)
    local = [found[("sluice_queue_depth", ("sluice.local", str(b)))] for b in range(10)]
    assert local == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert found[("sluice_queue_depth", ("sluice.upstream", "5"))] == 1
    assert sum(v for (name, _), v in found.items() if name == "sluice_queue_depth") == 4


def test_messages_are_counted_by_status():
    """Every retained status hash counts once under its status; absent statuses show 0."""
    client = fakeredis.FakeRedis(decode_responses=True)
    for index, status in enumerate(["pending", "pending", "completed", "error"]):
        client.hset(message_keys(f"m{index}").status, mapping={"status": status})
    client.set(message_keys("m0").request, "{}")
    found = _collect(client)
    counts = {labels[0]: v for (name, labels), v in found.items() if name == "sluice_messages"}
    assert counts == {"pending": 2, "processing": 0, "completed": 1, "cancelled": 0, "error": 1}
