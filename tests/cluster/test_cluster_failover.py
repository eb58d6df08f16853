"""A primary of the message store's Redis Cluster SIGKILLed mid-generation: its replica is promoted,
the running message ends well-formed with its exact text once, a new submit works."""

from __future__ import annotations

import time

import pytest

from shared.keys import message_keys
from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import Watcher, chat, post, script_text, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Cluster failover (node timeout 2 s, election, promotion) plus the clients finding the new
#: primary; generous, as the machine may be busy.
SUBMIT_BOUND_SECONDS = 60


def test_primary_killed_mid_generation_fails_over_inside_the_cluster(make_bed):
    """SIGKILL of the primary serving a running message: a replica takes its slots; the message
    completes with its exact text, no delta twice or missing (an observer resuming with
    Last-Event-ID); a message completed before is intact; new submits succeed."""
    bed = make_bed()
    worker = bed.worker("w1", concurrency=2)
    api = bed.start_api()
    bed.stack.wait_ready(api, timeout=120)
    done = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    wait_until(lambda: status_of(api, done)["status"] == "completed", 60, "a message before the kill")
    before = [(f.id, f.event, f.raw_data) for f in Watcher([api], done).wait(60)]

    running = post(api, chat(max_tokens=100)).json()["message_id"]
    watcher = Watcher([api], running)
    wait_until(lambda: sum(f.event == "content_block_delta" for f in watcher.frames) >= 10, 60, "deltas")
    victim = bed.topology.primary_of(message_keys(running).status)
    # A new message whose keys live in the same slots as the running one: its submit needs the
    # promoted replica.
    after = next(f"after-{n}" for n in range(10_000) if bed.topology.primary_of(f"{{after-{n}}}") == victim)
    bed.topology.kill(victim)

    started = time.monotonic()

    def accepted() -> bool:
        return post(api, chat(max_tokens=5, model="fast"), message_id=after).status_code == 200

    wait_until(accepted, SUBMIT_BOUND_SECONDS, "a submit accepted after the failover", 0.2)
    took = time.monotonic() - started
    # The nodes learn of the promotion by gossip: the one asked may lag the client that found it.
    wait_until(
        lambda: bed.topology.primary_of(message_keys(running).status) != victim,
        30,
        "every node sees the promotion",
    )
    frames = watcher.wait(180)
    check_grammar(frames)
    assert text_of(frames) == script_text(100)
    assert frames[-1].event == "message_stop"
    for message_id in (after, running):
        wait_until(lambda m=message_id: status_of(api, m)["status"] == "completed", 120, message_id)
    assert [(f.id, f.event, f.raw_data) for f in Watcher([api], done).wait(60)] == before
    assert worker.alive()
    print(f"first submit accepted {took:.1f}s after the primary was killed")
