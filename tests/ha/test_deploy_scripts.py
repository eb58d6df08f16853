"""deploy/'s Sentinel start scripts (compose override, k8s overlay) fail over for real: run
unchanged with real ``redis-server`` nodes and sentinels, the primary SIGKILLed, the replica is
promoted under its name, a Sluice client writes through the sentinels, and the old primary
comes back as a replica of the new one.

Each run happens in private network and mount namespaces (``unshare``): the hosts' names
resolve through a private ``/etc/hosts`` to loopback addresses of their own, so the scripts'
fixed ports (6379, 26379) are used inside, where nothing else listens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.stack import ROOT
from tests.unit.test_deploy_sentinel import k8s_scripts, sentinel_compose, shell

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K8S_NODE = "redis-{}.redis.sluice.svc.cluster.local".format
K8S_SENTINEL = "redis-sentinel-{}.redis-sentinel.sluice.svc.cluster.local".format


def namespaces_ok() -> None:
    """Skip unless this process may make network and mount namespaces and has redis-server."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("redis-server"):
        pytest.skip("needs root, unshare and redis-server")
    probe = subprocess.run(["unshare", "--net", "--mount", "--fork", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make namespaces here: {probe.stderr.decode().strip()}")


def compose_plan() -> dict[str, Any]:
    """The compose override's nodes and sentinels, with their scripts and environments."""
    services = sentinel_compose()["services"]
    names = ["redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"]
    hosts = {name: {"script": shell(services[name]), "env": services[name]["environment"]} for name in names}
    return {"hosts": hosts, "nodes": names[:2], "sentinels": names[2:]}


def k8s_plan() -> dict[str, Any]:
    """The overlay's two node pods and three sentinel pods (their DNS names, HOSTNAME, namespace)."""
    node, sentinel = k8s_scripts()
    hosts = {
        K8S_NODE(i): {"script": node, "env": {"HOSTNAME": f"redis-{i}", "POD_NAMESPACE": "sluice"}}
        for i in range(2)
    }
    for i in range(3):
        env = {"HOSTNAME": f"redis-sentinel-{i}", "POD_NAMESPACE": "sluice"}
        hosts[K8S_SENTINEL(i)] = {"script": sentinel, "env": env}
    sentinels = [K8S_SENTINEL(i) for i in range(3)]
    return {"hosts": hosts, "nodes": [K8S_NODE(0), K8S_NODE(1)], "sentinels": sentinels}


@pytest.mark.parametrize("plan", [compose_plan, k8s_plan], ids=["compose", "k8s"])
def test_sentinel_scripts_fail_over_and_the_old_primary_rejoins(tmp_path: Path, plan):
    """Killing the first primary promotes the replica (named as deployed), loses no replicated
    write, a Sluice client writes again, and the restarted node follows the new primary."""
    namespaces_ok()
    topology = plan()
    for index, host in enumerate(topology["hosts"].values()):
        host["ip"] = f"127.0.0.{index + 2}"
    shims = tmp_path / "bin"
    shims.mkdir()
    server = shutil.which("redis-server")
    (shims / "redis-server").write_text(f'#!/bin/sh\nexec {server} "$@" --bind "$BIND" --dir "$DATA"\n')
    (shims / "redis-sentinel").write_text(f'#!/bin/sh\nexec {server} "$1" --sentinel --bind "$BIND"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    hosts_file = tmp_path / "hosts"
    lines = ["127.0.0.1 localhost"] + [f"{h['ip']} {name}" for name, h in topology["hosts"].items()]
    hosts_file.write_text("\n".join(lines) + "\n")
    work = tmp_path / "work"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({**topology, "shims": str(shims), "work": str(work), "password": "pw-1"}))
    runner = f'"{sys.executable}" -m tests.ha.deploy_scripts "{plan_file}"'
    inside = f'mount --bind "{hosts_file}" /etc/hosts && exec {runner}'
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--fork", "sh", "-c", inside],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=280,
    )
    logs = "".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(work.glob("*.log")))
    assert done.returncode == 0, done.stderr[-3000:] + logs
    result = json.loads(done.stdout.splitlines()[-1])
    second = topology["nodes"][1]
    assert result["replicated"] >= 1
    assert result["promoted"] == second  # by its name, as the sentinels hand it to clients
    assert result["kept"] == "1"
    assert result["started_as"] == "slave"  # its start script asked the sentinels first
    assert (result["returned_role"], result["returned_primary"]) == ("slave", second)
