"""The priority mapping: lower is sooner, clamped into kombu's ten bands, default in the middle."""

from __future__ import annotations

import pytest

from shared.celery_config import celery_config
from shared.keys import broker_list
from shared.priority import PRIORITY_STEPS, kombu_priority, place
from shared.settings import Settings


@pytest.mark.parametrize(
    ("priority", "band"), [(-100, 0), (-5, 0), (-4, 1), (-1, 4), (0, 5), (1, 6), (3, 8), (4, 9), (99, 9)]
)
def test_priority_maps_onto_clamped_bands(priority, band):
    """``band = clamp(priority + 5, 0, 9)``: lower priorities get lower (sooner) bands."""
    assert kombu_priority(priority) == band


def test_absent_priority_takes_the_default_and_never_outranks_urgent_work():
    """Without a priority a message gets the default's band, behind any explicitly more urgent one."""
    absent = place("q", None)
    assert absent.priority == 0 and absent.band == 5
    assert place("q", -1).band < absent.band


def test_configured_default_priority_is_used_for_absent_priorities():
    """``SLUICE_DEFAULT_PRIORITY`` decides the band of messages without a priority."""
    assert place("q", None, default=2) == place("q", 2)
    assert celery_config(Settings(default_priority=2))["task_default_priority"] == 7


def test_every_band_has_its_own_kombu_list():
    """Band 0 is the bare queue name, band N the list ``<queue>:N``; ten distinct lists."""
    names = [broker_list("sluice.local", band) for band in PRIORITY_STEPS]
    assert names[0] == "sluice.local" and names[9] == "sluice.local:9"
    assert len(set(names)) == 10


def test_celery_config_keeps_order_and_never_prefetches():
    """Ten steps, ':' separator, priority order across queues, acks_late and no prefetch."""
    conf = celery_config(Settings())
    transport = conf["broker_transport_options"]
    assert transport["priority_steps"] == list(range(10)) and transport["sep"] == ":"
    assert transport["queue_order_strategy"] == "priority"
    assert conf["worker_prefetch_multiplier"] == 1 and conf["worker_disable_prefetch"] is True
    assert conf["task_acks_late"] is True
