"""The reaper: queues again the processing messages whose worker died (their lease lapsed).

Celery redelivers a task whose prefork child died (``task_reject_on_worker_lost``), but
not one whose whole worker died: that message waits for the broker's visibility timeout.
Every worker's heartbeat thread runs the reaper, so a message whose worker is gone is
queued again within ``SLUICE_LOCK_LEASE_SECONDS`` + one heartbeat, and resumed.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.celery_config import GENERATE_TASK
from shared.leases import Leases

log = logging.getLogger("sluice.worker")


def requeue_lapsed(leases: Leases, app: Any) -> int:
    """Send the task again for every message whose lease lapsed; returns how many."""
    due = leases.due_for_requeue()
    for item in due:
        # The second way ``sluice.generate`` is queued. A submit does not come here: the API builds
        # the protocol-2 message by hand (``shared.broker.TaskMessages``, a template per queue and
        # band, several times cheaper than ``send_task``) and the create script LPUSHes it with the
        # message, so a message is stored exactly when its task is queued. Here speed does not
        # matter and there is no create to join, so Celery's own ``send_task`` publishes it. What
        # must stay in sync: the task name (``GENERATE_TASK``), its one argument (the message's
        # storage id), the queue and the kombu priority band (``queue``/``band`` of the status
        # hash; ``shared.keys.broker_list``) and the protocol-2 layout; ``tests/unit/test_broker.py``
        # compares the hand-built message with what ``send_task`` writes, field by field.
        app.send_task(GENERATE_TASK, args=[item.message_id], queue=item.queue, priority=item.band)
        log.warning("requeued a message whose worker is gone", extra={"message_id": item.message_id})
    return len(due)
