"""Worker metrics: one finished generation updates every worker series once."""

from __future__ import annotations

from prometheus_client import REGISTRY

from workers import metrics
from workers.generation import Outcome


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_generation_is_recorded_in_every_series():
    """Outcome counter, queue wait, TTFT, tokens/s and duration each gain one observation."""
    series = [
        ("sluice_worker_generations_total", {"model": "m-unit", "queue": "q-unit", "outcome": "completed"}),
        ("sluice_worker_queue_wait_seconds_count", {"queue": "q-unit"}),
        ("sluice_worker_time_to_first_token_seconds_count", {"model": "m-unit"}),
        ("sluice_worker_tokens_per_second_count", {"model": "m-unit"}),
        ("sluice_worker_generation_duration_seconds_count", {"model": "m-unit", "outcome": "completed"}),
    ]
    before = [_value(name, **labels) for name, labels in series]
    outcome = Outcome("completed", "end_turn", output_tokens=21, ttft_ms=100.0, duration_s=1.1)
    metrics.record("m-unit", "q-unit", 250.0, outcome)
    assert [_value(name, **labels) for name, labels in series] == [b + 1 for b in before]
    assert _value("sluice_worker_tokens_per_second_sum", model="m-unit") >= 21.0 - 1e-9
    assert _value("sluice_worker_queue_wait_seconds_sum", queue="q-unit") >= 0.25 - 1e-9


def test_a_generation_without_tokens_records_no_ttft():
    """A generation that never produced a delta (e.g. cancelled while starting) has no TTFT sample."""
    before = _value("sluice_worker_time_to_first_token_seconds_count", model="m-empty")
    metrics.record("m-empty", "q-unit", 5.0, Outcome("cancelled", "cancelled", duration_s=0.01))
    assert _value("sluice_worker_time_to_first_token_seconds_count", model="m-empty") == before
    assert (
        _value("sluice_worker_generations_total", model="m-empty", queue="q-unit", outcome="cancelled") == 1
    )
