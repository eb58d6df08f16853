"""Celery settings that the API (producer) and the workers (consumers) must agree on."""

from __future__ import annotations

from typing import Any

from shared.keys import BROKER_SEP
from shared.priority import PRIORITY_STEPS, kombu_priority
from shared.redis_client import broker_transport_options, broker_url
from shared.settings import SharedSettings

#: The task that runs one generation; sent by name, carrying only the message id.
GENERATE_TASK = "sluice.generate"
#: The task that POSTs one webhook delivery; sent by name, carrying only the delivery id.
WEBHOOK_TASK = "sluice.webhook"
#: Queue of webhook deliveries: I/O only, served apart so a slow endpoint never holds a generation slot.
WEBHOOK_QUEUE = "sluice.webhooks"
#: Task header carrying the request's correlation id. Not ``correlation_id``: Celery's worker
#: overwrites that name with the AMQP property of the same name (the task id).
CORRELATION_HEADER = "sluice_correlation_id"
#: Queue of the embedded model (CPU-bound, prefork workers).
LOCAL_QUEUE = "sluice.local"
#: Conventional queue of upstream (I/O-bound) models, served by thread-pool workers.
UPSTREAM_QUEUE = "sluice.upstream"


def visibility_timeout(settings: SharedSettings) -> int:
    """Above the hard task time limit, so a running generation is never handed out twice."""
    return settings.task_time_limit_seconds + 300


def celery_config(settings: SharedSettings) -> dict[str, Any]:
    """The Celery configuration both sides load."""
    transport = {
        "priority_steps": PRIORITY_STEPS,
        "sep": BROKER_SEP,
        "queue_order_strategy": "priority",
        "visibility_timeout": visibility_timeout(settings),
        "health_check_interval": 10,
        "socket_keepalive": True,
        **broker_transport_options(settings),
    }
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        # Never reserve work a busy worker cannot start: the most urgent message must stay
        # in Redis for whichever worker frees up first (prefetch would freeze the order).
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,
        "task_default_queue": LOCAL_QUEUE,
        "task_default_priority": kombu_priority(settings.default_priority),
        "task_time_limit": settings.task_time_limit_seconds,
        "task_soft_time_limit": settings.task_time_limit_seconds - 30,
        "worker_send_task_events": True,
        # No task-sent event: it is a second publish per submit (~40% of send_task's CPU,
        # measured). Flower still sees every task from the worker's received/started events,
        # and sluice_queue_depth counts what waits.
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 10,
    }
