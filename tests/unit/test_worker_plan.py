"""``make run``'s worker plan: prefork for local models, a thread pool for upstream queues."""

from __future__ import annotations

from deploy.run import worker_plan
from shared.models import ModelRegistry, ModelSpec, load_registry
from shared.settings import Settings


def test_only_the_local_worker_without_upstream_models():
    """The default registry (embedded model only) gets one prefork worker on sluice.local."""
    settings = Settings(worker_concurrency=2)
    plans = worker_plan(load_registry(settings), settings)
    assert [(p.name, p.queues, p.pool, p.concurrency) for p in plans] == [
        ("local", ("sluice.local",), "prefork", 2),
        ("webhooks", ("sluice.webhooks",), "threads", 8),
    ]


def test_upstream_queues_get_a_thread_pool_worker():
    """Queues of non-local providers are consumed by a high-concurrency thread-pool worker."""
    registry = ModelRegistry(
        [
            ModelSpec(id="default", provider="llama_cpp"),
            ModelSpec(id="big", provider="llama_cpp", queue="sluice.local-big"),
            ModelSpec(id="remote", provider="scripted", queue="sluice.upstream"),
            ModelSpec(id="other", provider="scripted", queue="sluice.upstream-b"),
        ]
    )
    plans = worker_plan(registry, Settings(upstream_concurrency=40))
    assert plans[0].queues == ("sluice.local", "sluice.local-big") and plans[0].pool == "prefork"
    assert plans[1].queues == ("sluice.upstream", "sluice.upstream-b")
    assert (plans[1].pool, plans[1].concurrency) == ("threads", 40)
