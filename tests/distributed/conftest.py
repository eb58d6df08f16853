"""Deployments over network-namespace hosts; skipped, with the reason, where namespaces cannot be made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.cluster import MODELS_TOML, Deployment
from tests.distributed.netns import NetnsUnavailable, Network, probe


@pytest.fixture(scope="session")
def netns_ok() -> None:
    """Skip every distributed test when this machine cannot make namespaces (not root, no veth)."""
    try:
        probe()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def deployment(netns_ok: None, tmp_path: Path) -> Iterator[Deployment]:
    """An empty deployment on a fresh switch; every process and namespace is removed after."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML)
    env = {
        "SLUICE_MODELS_FILE": str(models),
        "SLUICE_PING_INTERVAL_SECONDS": "0.5",
        "SLUICE_LOG_JSON": "false",
        "SLUICE_LOCK_LEASE_SECONDS": "2",
    }
    net = Network()
    deployed = Deployment(net, tmp_path, env)
    try:
        yield deployed
    finally:
        deployed.stop()
        net.close()
