"""``make run``: start redis-server (unless ``SLUICE_REDIS_URL`` or ``SLUICE_REDIS_SENTINELS`` is
set; with ``SLUICE_REDIS_HA=1``, a Sentinel-managed primary, replica and three sentinels instead),
a prefork worker for the local models, a thread-pool worker for upstream queues (when the registry
has any), the API under gunicorn and Flower; wait for readiness; stop all on a signal. With
``SLUICE_STORE_CLUSTER=1`` (and no ``SLUICE_STORE_CLUSTER_NODES``), also a local Redis Cluster of
three primaries and three replicas for the message store (``deploy/redis_cluster.py``)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from deploy.probes import free_port, port_open
from deploy.redis_cluster import start_cluster
from deploy.redis_ha import start_topology
from deploy.stack import ROOT, Stack
from shared.celery_config import LOCAL_QUEUE, WEBHOOK_QUEUE
from shared.models import ModelRegistry, RegistryError, load_registry
from shared.settings import DeploySettings, SettingsError

#: Providers that compute on this machine's CPU: their queues go to prefork workers.
LOCAL_PROVIDERS = frozenset({"llama_cpp"})
#: Threads of the webhook worker: deliveries wait on the network, never on a CPU.
WEBHOOK_CONCURRENCY = 8


@dataclass(frozen=True)
class WorkerPlan:
    """One worker type to start: its name, queues, pool and concurrency."""

    name: str
    queues: tuple[str, ...]
    pool: str
    concurrency: int
    #: Serves Prometheus metrics (at SLUICE_WORKER_METRICS_PORT + its index) when those are on.
    metrics: bool = True


def worker_plan(registry: ModelRegistry, settings: DeploySettings) -> list[WorkerPlan]:
    """The local prefork worker always; a thread-pool worker for queues of upstream models; a small
    thread-pool worker for webhook deliveries, so a slow endpoint never holds a generation slot."""
    local = {LOCAL_QUEUE} | {spec.queue for spec in registry if spec.provider in LOCAL_PROVIDERS}
    upstream = registry.queues() - local
    plans = [WorkerPlan("local", tuple(sorted(local)), "prefork", settings.worker_concurrency)]
    if upstream:
        plans.append(
            WorkerPlan("upstream", tuple(sorted(upstream)), "threads", settings.upstream_concurrency)
        )
    plans.append(WorkerPlan("webhooks", (WEBHOOK_QUEUE,), "threads", WEBHOOK_CONCURRENCY, metrics=False))
    return plans


def main() -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    try:
        settings = DeploySettings.from_env()
        registry = load_registry(settings)
    except (SettingsError, RegistryError) as exc:
        print(exc, file=sys.stderr)
        return 2
    var_dir = Path(settings.var_dir or ROOT / "var")
    stack = Stack(var_dir / "logs", env={k: v for k, v in os.environ.items() if k.startswith("SLUICE_")})
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if settings.redis_ha and not settings.redis_sentinels:
            topology = start_topology(stack, password=settings.redis_password, down_after_ms=5000)
            print(
                f"redis:   primary :{topology.primary_port()} + 1 replica, sentinels "
                f"{topology.sentinel_addresses} (master name {topology.master_name!r})"
            )
        elif "redis_url" not in settings.model_fields_set and not settings.redis_sentinels:
            url = stack.start_redis(free_port() if port_open(6379) else 6379)
            print(f"redis:   {url} (data in {var_dir / 'logs' / 'redis'})")
        if settings.store_cluster and not settings.store_cluster_nodes:
            cluster = start_cluster(stack, password=settings.redis_password)
            print(f"store:   Redis Cluster, 3 primaries + 3 replicas: {cluster.addresses}")
        for index, plan in enumerate(worker_plan(registry, settings)):
            port = (
                settings.worker_metrics_port + index
                if settings.worker_metrics_port and plan.metrics
                else None
            )
            stack.start_worker(
                plan.name,
                queues=",".join(plan.queues),
                pool=plan.pool,
                concurrency=plan.concurrency,
                metrics_port=port,
            )
            where = f", metrics on :{port}" if port else ""
            print(
                f"worker:  {plan.name} ({plan.pool} x{plan.concurrency}) on {', '.join(plan.queues)}{where}"
            )
        api = stack.start_api(settings.port, env={"SLUICE_HOST": settings.host})
        flower = stack.start_flower(settings.flower_port, settings.flower_basic_auth)
        print(f"api:     {api}    (logs in {stack.var_dir})")
        print(f"flower:  {flower}")
        stack.wait_ready(api)
        print("ready", flush=True)
        while not stop.wait(1.0):
            dead = [p.name for p in stack.processes if not p.alive()]
            if dead:
                print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
                return 1
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping every process", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
