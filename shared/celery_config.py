"""Celery settings that the API (producer) and the workers (consumers) must agree on."""

from __future__ import annotations

from typing import Any

from shared.priority import PRIORITY_STEPS
from shared.settings import Settings

#: The task that runs one generation; sent by name, carrying only the message id.
GENERATE_TASK = "sluice.generate"
#: Queue of the embedded model (CPU-bound, prefork workers).
LOCAL_QUEUE = "sluice.local"


def visibility_timeout(settings: Settings) -> int:
    """Above the hard task time limit, so a running generation is never handed out twice."""
    return settings.task_time_limit_seconds + 300


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration both sides load."""
    transport = {
        "priority_steps": PRIORITY_STEPS,
        "sep": ":",
        "queue_order_strategy": "priority",
        "visibility_timeout": visibility_timeout(settings),
        "health_check_interval": 10,
        "socket_keepalive": True,
    }
    return {
        "broker_url": settings.redis_url,
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
        "worker_prefetch_multiplier": 1,
        "task_default_queue": LOCAL_QUEUE,
        "task_default_priority": 5,
        "task_time_limit": settings.task_time_limit_seconds,
        "task_soft_time_limit": settings.task_time_limit_seconds - 30,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "broker_pool_limit": 10,
    }
