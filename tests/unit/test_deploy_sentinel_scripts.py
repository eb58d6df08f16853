"""deploy/'s Sentinel start scripts, run by ``sh`` with stand-ins for ``redis-cli``, ``redis-server``
and ``redis-sentinel`` that record what they get: each node and sentinel picks the primary the
sentinels name, and the password stays off every command line (tests/ha runs them for real)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_deploy_sentinel import k8s_scripts, sentinel_compose, shell

STAND_INS = {
    # Answers as a sentinel that knows $PRIMARY (none: unreachable), and PONG to a ping.
    "redis-cli": (
        'echo "$@" >> "$LOG"\n'
        'case "$*" in *get-master-addr-by-name*) [ -n "$PRIMARY" ] || exit 1\n'
        '  printf "%s\\n6379\\n" "$PRIMARY";;\n'
        "*ping*) echo PONG;; esac\n"
    ),
    # Records its arguments and the config it reads on stdin.
    "redis-server": 'echo "ARGS $*" > "$OUT"; cat >> "$OUT"\n',
    "redis-sentinel": 'echo "ARGS $*" > "$OUT"; cat "$1" >> "$OUT"; stat -c "MODE %a" "$1" >> "$OUT"\n',
}


def run_script(script: str, tmp_path: Path, primary: str, **env: str) -> tuple[list[str], str]:
    """Run a start script with the stand-ins; (what the server got, what redis-cli was asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    out, log = tmp_path / "out", tmp_path / "log"
    log.write_text("")
    environ = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "REDISCLI_AUTH": "s3cret-pw",
        "PRIMARY": primary,
        "OUT": str(out),
        "LOG": str(log),
        **env,
    }
    script = script.replace("/data", str(data))
    subprocess.run(["sh", "-c", script], env=environ, check=True, timeout=30)
    return out.read_text().splitlines(), log.read_text()


@pytest.mark.parametrize(
    ("node", "known", "replica_of"),
    [("redis", "", None), ("redis-replica", "", "redis"), ("redis", "redis-replica", "redis-replica")],
    ids=["first-primary", "first-replica", "old-primary-returns-as-replica"],
)
def test_compose_node_script_asks_the_sentinels_for_the_primary(tmp_path, node, known, replica_of):
    """A node starts as primary only if it is the one the sentinels name (or, none answering, the
    first primary); otherwise as a replica of it; the password only on stdin."""
    script = shell(sentinel_compose()["services"][node])
    out, asked = run_script(script, tmp_path, known, NODE_HOST=node, FIRST_PRIMARY="redis")
    args = out[0].split()
    assert (args[args.index("--replicaof") + 1] if "--replicaof" in args else None) == replica_of
    assert {"requirepass s3cret-pw", "masterauth s3cret-pw", f"replica-announce-ip {node}"} <= set(out)
    assert "s3cret-pw" not in out[0] and "s3cret-pw" not in asked
    assert "get-master-addr-by-name sluice" in asked


@pytest.mark.parametrize("known", ["", "redis-replica"], ids=["first-start", "after-failover"])
def test_compose_sentinel_script_writes_a_private_config(tmp_path, known):
    """A sentinel monitors the primary its peers name (or the first one), with a quorum of 2, in a
    config file only its owner reads."""
    script = shell(sentinel_compose()["services"]["sentinel-2"])
    out, asked = run_script(script, tmp_path, known, SENTINEL_HOST="sentinel-2", FIRST_PRIMARY="redis")
    assert out[0].endswith("/sentinel.conf") and "MODE 600" in out
    assert f"sentinel monitor sluice {known or 'redis'} 6379 2" in out
    assert {
        "requirepass s3cret-pw",
        "sentinel auth-pass sluice s3cret-pw",
        "sentinel announce-ip sentinel-2",
    } <= set(out)
    assert "-h sentinel-2 " not in asked  # never asks itself


@pytest.mark.parametrize(
    ("pod", "known", "replica_of"),
    [("redis-0", "", None), ("redis-1", "", "redis-0"), ("redis-0", "redis-1", "redis-1")],
    ids=["first-primary", "first-replica", "old-primary-returns-as-replica"],
)
def test_k8s_node_script_asks_the_sentinels_for_the_primary(tmp_path, pod, known, replica_of):
    """The same rule in Kubernetes, with the pods' DNS names."""
    node, _ = k8s_scripts()
    fqdn = "{}.redis.sluice.svc.cluster.local".format
    out, _ = run_script(node, tmp_path, fqdn(known) if known else "", HOSTNAME=pod, POD_NAMESPACE="sluice")
    args = out[0].split()
    assert (args[args.index("--replicaof") + 1] if "--replicaof" in args else None) == (
        fqdn(replica_of) if replica_of else None
    )
    assert f"replica-announce-ip {fqdn(pod)}" in out and "s3cret-pw" not in out[0]


def test_k8s_sentinel_script_writes_a_private_config(tmp_path):
    """A sentinel pod with no peer answering monitors redis-0 and announces its own DNS name."""
    _, sentinel = k8s_scripts()
    out, _ = run_script(sentinel, tmp_path, "", HOSTNAME="redis-sentinel-1", POD_NAMESPACE="sluice")
    assert "sentinel monitor sluice redis-0.redis.sluice.svc.cluster.local 6379 2" in out
    assert "sentinel announce-ip redis-sentinel-1.redis-sentinel.sluice.svc.cluster.local" in out
    assert "MODE 600" in out and "sentinel auth-pass sluice s3cret-pw" in out
