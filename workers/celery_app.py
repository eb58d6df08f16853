"""The Celery app of the workers: configuration, queues, and per-process setup after the fork.

No module-level state: the app carries a ``WorkerContext`` holding the settings (read once, in
the worker's main process, before any fork) and this process's ``Runtime`` (built once per
process: in each prefork child right after the fork, in the main process when the heartbeat
starts; a thread-pool worker's tasks, heartbeat and feeder share the main process's).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery, current_app, signals
from kombu import Queue

from shared.celery_config import CORRELATION_HEADER, LOCAL_QUEUE, WEBHOOK_QUEUE, celery_config
from shared.logging import bind_message, clear_message, configure_logging
from shared.models import load_registry
from shared.routing import STATEFUL_PROVIDERS, private_queue
from shared.settings import WorkerSettings
from shared.store.cluster import leases_for
from workers import metrics
from workers.feeder import Feeder, FeederThread
from workers.reaper import requeue_lapsed
from workers.runtime import Runtime, build_runtime

HEARTBEAT_SECONDS = 5.0


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


@dataclass
class WorkerContext:
    """What one worker process holds, hung on its app (``SluiceCelery.context``)."""

    settings: WorkerSettings
    runtime: Runtime | None = None
    heartbeat: _Heartbeat | None = None
    feeder: FeederThread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get_runtime(self) -> Runtime:
        """This process's runtime, built on first use."""
        with self.lock:
            if self.runtime is None:
                self.runtime = build_runtime(self.settings)
            return self.runtime

    def after_fork(self) -> Runtime:
        """A prefork child's own runtime: never the one it may have inherited from its parent."""
        self.lock = threading.Lock()
        self.heartbeat = self.feeder = None
        self.runtime = build_runtime(self.settings)
        return self.runtime


class SluiceCelery(Celery):
    """The workers' Celery app, carrying its process's ``WorkerContext``.

    Not in ``app.conf``: the conf is served to anyone asking the workers (``celery inspect
    conf``, Flower's worker page) and only its own keys are censored there; the settings carry
    the Redis password."""

    context: WorkerContext


def create_celery(settings: WorkerSettings) -> SluiceCelery:
    """The worker-side Celery app for ``settings``; connects to nothing until it runs."""
    _detached_channel_is_a_connection_error()
    app = SluiceCelery("sluice", set_as_current=True)
    app.context = WorkerContext(settings)
    app.conf.update(celery_config(settings))
    queues = {LOCAL_QUEUE, WEBHOOK_QUEUE} | load_registry(settings).queues()
    app.conf.task_queues = [Queue(name) for name in sorted(queues)]
    app.conf.include = ["workers.tasks"]
    return app


def context_of(app: Any = None) -> WorkerContext | None:
    """The context of ``app`` (default: the current app); None for an app ``create_celery`` did not build."""
    found = app if app is not None else current_app._get_current_object()
    return found.context if isinstance(found, SluiceCelery) else None


def app_settings(app: Any) -> WorkerSettings:
    """The settings ``app`` was created with (``create_celery``)."""
    context = context_of(app)
    assert context is not None, "not an app of create_celery"
    return context.settings


def runtime_of(app: Any) -> Runtime:
    """The runtime of this process, for a task of ``app``."""
    context = context_of(app)
    assert context is not None, "not an app of create_celery"
    return context.get_runtime()


@signals.celeryd_after_setup.connect
def _consume_private_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Each worker also consumes a private queue per queue of a stateful model it serves, listed
    first so that, band by band, it takes the conversations routed to it before shared work."""
    if instance is None or not sender:
        return
    queues = instance.app.amqp.queues
    consumed = list(queues.consume_from)
    registry = load_registry(app_settings(instance.app))
    stateful = {s.queue for s in registry if s.provider in STATEFUL_PROVIDERS}
    private = [private_queue(name, str(sender)) for name in consumed if name in stateful]
    for name in private:
        queues.add(Queue(name))
    if private:
        queues.select([*private, *consumed])


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Structured logs instead of Celery's own setup (a receiver here makes Celery skip it)."""
    context = context_of()
    if context is not None:
        configure_logging(context.settings, "worker")


@signals.worker_process_init.connect
def _load_models_after_fork(**_: Any) -> None:
    """Each prefork child sets up its logs, builds its runtime and loads its models after the fork."""
    context = context_of()
    if context is None:
        return
    configure_logging(context.settings, "worker")
    runtime = context.after_fork()
    if context.settings.preload:
        runtime.preload()


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
    """Writes this worker's heartbeat so ``/ready`` knows a worker consumes, and queues again
    the messages whose lease lapsed (``workers.reaper``)."""

    def __init__(self, hostname: str, runtime: Runtime, app: Any = None) -> None:
        self.hostname = hostname
        self.runtime = runtime
        self.app = app
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sluice-heartbeat", daemon=True)

    def _run(self) -> None:
        store = self.runtime.store
        leases = leases_for(store, self.runtime.settings.lock_lease_seconds)
        while not self.stopped.is_set():
            with contextlib.suppress(Exception):  # Redis down: keep trying; /ready shows it
                store.worker_heartbeat(self.hostname)
            if self.app is not None:
                with contextlib.suppress(Exception):  # the next beat tries again
                    requeue_lapsed(leases, self.app)
            self.stopped.wait(HEARTBEAT_SECONDS)
        with contextlib.suppress(Exception):  # shutting down anyway
            store.worker_gone(self.hostname)


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """The main process starts the heartbeat, the batch feeder and the metrics server, on its one runtime."""
    app = getattr(sender, "app", None)
    context = context_of(app)
    if context is None:
        return
    settings = context.settings
    runtime = context.get_runtime()
    hostname = getattr(sender, "hostname", None) or f"worker@{os.getpid()}"
    context.heartbeat = _Heartbeat(hostname, runtime, app)
    context.heartbeat.thread.start()
    assert runtime.outcomes is not None
    feeder = Feeder(runtime.outcomes, runtime.registry, runtime.tasks, settings, f"{hostname}:{os.getpid()}")
    context.feeder = FeederThread(feeder, app)
    context.feeder.start()
    if settings.worker_metrics_port:
        pool = type(getattr(sender, "pool", None)).__module__.rsplit(".", 1)[-1]
        metrics.serve(settings.worker_metrics_port, settings.host, pool)


@signals.worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    context = context_of(getattr(sender, "app", None))
    if context is None:
        return
    if context.heartbeat is not None:
        context.heartbeat.stopped.set()
        context.heartbeat.thread.join(timeout=2)
    if context.feeder is not None:
        context.feeder.stop()
