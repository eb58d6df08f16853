"""The Celery app of the workers: configuration, queues, and per-process setup after the fork."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any

import redis
from celery import Celery, signals
from kombu import Queue

from shared.celery_config import CORRELATION_HEADER, LOCAL_QUEUE, WEBHOOK_QUEUE, celery_config
from shared.logging import bind_message, clear_message, configure_logging
from shared.models import load_registry
from shared.routing import STATEFUL_PROVIDERS, private_queue
from shared.settings import Settings, load_settings
from shared.store.cluster import leases_for
from workers import metrics
from workers.feeder import Feeder, FeederThread
from workers.reaper import requeue_lapsed
from workers.runtime import Runtime, build_runtime

HEARTBEAT_SECONDS = 5.0

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


#: The settings each app was built with. Not in ``app.conf``: the conf is served to anyone
#: asking the workers (``celery inspect conf``, Flower's worker page) and only its own keys are
#: censored there; Settings carry the Redis password and Flower's credentials.
_app_settings: weakref.WeakKeyDictionary[Celery, Settings] = weakref.WeakKeyDictionary()


def _detached_channel_is_a_connection_error() -> None:
    """Keep a thread-pool worker alive when Redis goes away while it runs tasks.

    On a lost broker connection Celery collects the connection (detaching its transport),
    then closes it; closing the channel again restores its unacked messages, and a task thread
    may ack meanwhile. Both open a new Redis client from the detached transport, and kombu
    raises ``AttributeError`` there, which Celery takes as unrecoverable: the worker exits
    (seen with thread pools of concurrency > 1, on a Redis restart or a Sentinel failover).
    Raising ``redis.ConnectionError`` instead makes it the outage it is: Celery logs it and
    reconnects. Nothing is lost: unacked messages stay in kombu's unacked set (restored after
    the visibility timeout) and the reaper queues again any message whose run stopped.
    """
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    original = channel._connparams
    if getattr(original, "sluice_patched", False):
        return

    def connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = getattr(self, "connection", None)
        if transport is None or transport.client is None:
            raise redis.ConnectionError("the broker connection was closed")
        return original(self, asynchronous)

    connparams.sluice_patched = True  # type: ignore[attr-defined]
    setattr(channel, "_connparams", connparams)  # noqa: B010  (a method replaced on purpose)


def create_celery(settings: Settings) -> Celery:
    """The worker-side Celery app for ``settings``; connects to nothing until it runs."""
    _detached_channel_is_a_connection_error()
    app = Celery("sluice", set_as_current=True)
    app.conf.update(celery_config(settings))
    queues = {LOCAL_QUEUE, WEBHOOK_QUEUE} | load_registry(settings).queues()
    app.conf.task_queues = [Queue(name) for name in sorted(queues)]
    app.conf.include = ["workers.tasks"]
    _app_settings[app] = settings
    return app


def app_settings(app: Celery) -> Settings:
    """The settings ``app`` was created with (``create_celery``)."""
    return _app_settings[app]


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (after the fork in prefork children)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = build_runtime(load_settings())
        return _runtime


@signals.celeryd_after_setup.connect
def _consume_private_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Each worker also consumes a private queue per queue of a stateful model it serves, listed
    first so that, band by band, it takes the conversations routed to it before shared work."""
    if instance is None or not sender:
        return
    queues = instance.app.amqp.queues
    consumed = list(queues.consume_from)
    stateful = {s.queue for s in load_registry(load_settings()) if s.provider in STATEFUL_PROVIDERS}
    private = [private_queue(name, str(sender)) for name in consumed if name in stateful]
    for name in private:
        queues.add(Queue(name))
    if private:
        queues.select([*private, *consumed])


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Structured logs instead of Celery's own setup (a receiver here makes Celery skip it)."""
    configure_logging(load_settings(), "worker")


@signals.worker_process_init.connect
def _load_models_after_fork(**_: Any) -> None:
    """Each prefork child configures its logs and loads its models once, right after the fork."""
    configure_logging(load_settings(), "worker")
    if os.environ.get("SLUICE_PRELOAD", "1") != "0":
        get_runtime().preload()


@signals.worker_process_shutdown.connect
def _forget_child_metrics(pid: int | None = None, **_: Any) -> None:
    metrics.process_gone(pid or os.getpid())


@signals.task_prerun.connect
def _bind_log_context(task: Any = None, args: Any = None, **_: Any) -> None:
    """Every log line of a task carries its message id and the correlation id from the task headers."""
    bind_message(args[0] if args else None, getattr(task.request, CORRELATION_HEADER, None))


@signals.task_postrun.connect
def _clear_log_context(**_: Any) -> None:
    clear_message()


class _Heartbeat:
    """Writes this worker's heartbeat so ``/ready`` knows a worker consumes."""

    def __init__(self, hostname: str, app: Any = None) -> None:
        self.hostname = hostname
        self.app = app
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sluice-heartbeat", daemon=True)

    def _run(self) -> None:
        settings = load_settings()
        store = build_runtime(settings).store
        leases = leases_for(store, settings.lock_lease_seconds)
        while not self.stopped.is_set():
            with contextlib.suppress(Exception):  # Redis down: keep trying; /ready shows it
                store.worker_heartbeat(self.hostname)
            if self.app is not None:
                with contextlib.suppress(Exception):  # the next beat tries again
                    requeue_lapsed(leases, self.app)
            self.stopped.wait(HEARTBEAT_SECONDS)
        with contextlib.suppress(Exception):  # shutting down anyway
            store.worker_gone(self.hostname)


_heartbeat: _Heartbeat | None = None
_feeder: FeederThread | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    _heartbeat = _Heartbeat(
        getattr(sender, "hostname", None) or f"worker@{os.getpid()}", getattr(sender, "app", None)
    )
    _heartbeat.thread.start()
    settings = load_settings()
    global _feeder
    runtime = build_runtime(settings)
    assert runtime.outcomes is not None
    feeder = Feeder(
        runtime.outcomes, runtime.registry, runtime.tasks, settings, _heartbeat.hostname + f":{os.getpid()}"
    )
    _feeder = FeederThread(feeder, getattr(sender, "app", None))
    _feeder.start()
    if settings.worker_metrics_port:
        pool = type(getattr(sender, "pool", None)).__module__.rsplit(".", 1)[-1]
        metrics.serve(settings.worker_metrics_port, settings.host, pool)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stopped.set()
        _heartbeat.thread.join(timeout=2)
    if _feeder is not None:
        _feeder.stop()
