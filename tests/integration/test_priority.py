"""Priority really changes the order in which work starts, on the real Redis transport."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from shared.keys import broker_list
from tests.integration.helpers import body, status, submit, wait_status
from tests.integration.stacks import ScriptedStack, hostname, scripted_stack, wait_workers

pytestmark = pytest.mark.integration

QUEUE = "sluice.local"


@pytest.fixture(scope="module")
def prio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedStack]:
    """One prefork worker process with concurrency 1 on the local queue."""
    running = scripted_stack(tmp_path_factory.mktemp("priority"))
    name = hostname("prio")
    running.stack.start_worker(name, queues=QUEUE, concurrency=1, pool="prefork")
    wait_workers(running.api, [name])
    yield running
    running.stop()


def _block(stack: ScriptedStack) -> str:
    """Occupy the only worker slot with a generation that runs until cancelled."""
    blocker = submit(stack.api, body(model="blocker", max_tokens=100000))
    wait_status(stack.api, blocker, {"processing"})
    return blocker


def _cancel(stack: ScriptedStack, message_id: str) -> None:
    response = httpx.post(f"{stack.api}/v1/messages/async/{message_id}/cancel", timeout=10)
    assert response.status_code == 200, response.text


def test_urgent_message_starts_before_earlier_ones_and_equal_priorities_keep_fifo(prio):
    """Behind a blocker, a priority -5 message queued last starts first; eight priority-5 ones start FIFO."""
    blocker = _block(prio)
    later = [submit(prio.api, body("x", model="quick", max_tokens=3, priority=5)) for _ in range(8)]
    urgent = submit(prio.api, body("x", model="quick", max_tokens=3, priority=-5))
    assert all(status(prio.api, m)["status"] == "pending" for m in [*later, urgent])
    _cancel(prio, blocker)
    finished = [wait_status(prio.api, m, {"completed"}, timeout=120) for m in [urgent, *later]]
    started = [f["metadata"]["started_at"] for f in finished]
    # Each quick generation lasts ~30 ms on one slot, so start times are distinct and ordered.
    assert len(set(started)) == len(started), started
    assert started[0] < min(started[1:]), "the urgent message did not start first"
    assert started[1:] == sorted(started[1:]), "equal priorities did not start in FIFO order"


def test_waiting_messages_sit_in_the_kombu_list_of_their_band(prio):
    """Priority 5 waits in ``<queue>:9``, the default in ``<queue>:5``, -5 in the bare ``<queue>``."""
    blocker = _block(prio)
    try:
        placed = {
            p: submit(
                prio.api, body("x", model="quick", max_tokens=1, **({} if p is None else {"priority": p}))
            )
            for p in (5, None, -5)
        }
        depths = {band: prio.redis.llen(broker_list(QUEUE, band)) for band in range(10)}
        assert depths == {band: int(band in (0, 5, 9)) for band in range(10)}
        bands = {p: status(prio.api, m)["metadata"]["band"] for p, m in placed.items()}
        assert bands == {5: 9, None: 5, -5: 0}
        assert status(prio.api, placed[None])["metadata"]["queue"] == QUEUE
    finally:
        _cancel(prio, blocker)
    for message_id in placed.values():
        wait_status(prio.api, message_id, {"completed"}, timeout=120)
