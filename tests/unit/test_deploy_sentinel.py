"""deploy/'s Sentinel mode: the compose override and the k8s-sentinel overlay validate, keep secrets
off command lines, and point every Sluice process at the sentinels they start.

Like test_deploy.py: no Docker engine or cluster. The override is merged into the base file by
Compose's rules and checked against the Compose specification; the overlay is rendered by
``kubectl kustomize`` and checked against Kubernetes' schemas. The start scripts run under ``sh``
with stand-ins for ``redis-cli``, ``redis-server`` and ``redis-sentinel`` that record what they get.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from deploy import make_secrets
from shared.settings import load_settings
from shared.settings_parse import parse_addresses
from tests.unit.test_deploy import (
    DEPLOY,
    KEDA_KINDS,
    KUBERNETES_VERSION,
    SECRET_OPTIONS,
    SETTINGS,
    compose,
    pod_containers,
    pod_label,
    redis_server_args,
    secret_env,
)

OVERRIDE = DEPLOY / "docker-compose.sentinel.yml"
OVERLAY = DEPLOY / "k8s-sentinel"
SLUICE_SERVICES = {"api", "worker", "worker-upstream", "worker-webhooks", "flower"}
SLUICE_PODS = {
    "sluice-api",
    "sluice-worker-local",
    "sluice-worker-upstream",
    "sluice-worker-webhooks",
    "sluice-flower",
}
#: Commands that replace instead of merging (Compose's merge rules).
COMPOSE_REPLACED = {"command", "entrypoint"}


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge of two files: mappings merge, sequences append, commands are replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in COMPOSE_REPLACED | {"test"}:
        return base + [v for v in override if v not in base]
    return override


def sentinel_compose() -> dict[str, Any]:
    """The base compose file with the Sentinel override merged in, as ``docker compose -f -f`` does."""
    override = yaml.safe_load(OVERRIDE.read_text())
    override = {k: v for k, v in override.items() if not k.startswith("x-")}
    merged: dict[str, Any] = merge(compose(), override)
    return merged


def shell(service: dict[str, Any]) -> str:
    """A compose service's ``sh -c`` script, with Compose's ``$$`` escapes undone."""
    command = service["command"]
    assert command[:2] == ["sh", "-c"]
    return str(command[2]).replace("$$", "$")


def rendered() -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/k8s-sentinel``: every resource of the overlay."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The documents of one kind, by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container_script(doc: dict[str, Any]) -> str:
    """The ``sh -c`` script of a StatefulSet's only container."""
    (container,) = pod_containers(doc)
    assert container["command"] == ["sh", "-c"]
    return str(container["args"][0])


# -- compose -----------------------------------------------------------------------------------


def test_compose_override_merges_into_a_valid_project():
    """Base + override is a valid Compose project: a primary, a replica, three sentinels, Sluice."""
    merged = sentinel_compose()
    project = PyCompose.from_json(json.dumps(merged))
    assert set(project.service_names()) == {
        "redis",
        "redis-replica",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
        *SLUICE_SERVICES,
    }
    project.to_spec()


def test_compose_sluice_services_use_the_sentinels_the_override_starts():
    """Every Sluice service names the three sentinel services, waits for them, and gets the password."""
    services = sentinel_compose()["services"]
    sentinels = {name for name in services if name.startswith("sentinel-")}
    for name in SLUICE_SERVICES:
        service = services[name]
        env = service["environment"]
        addresses = parse_addresses(env["SLUICE_REDIS_SENTINELS"])
        assert {host for host, _ in addresses} == sentinels and {port for _, port in addresses} == {26379}
        assert all(service["depends_on"][s]["condition"] == "service_healthy" for s in sentinels)
        assert "secrets/sentinel.env" in service["env_file"], name
        settings = load_settings({**env, "SLUICE_REDIS_PASSWORD": "x"})
        assert settings.redis_sentinels and settings.redis_sentinel_master == "sluice"
    for script in (shell(services[s]) for s in sentinels):
        assert re.search(r"^sentinel monitor sluice \$primary 6379 2$", script, re.MULTILINE)


def test_compose_sentinel_mode_publishes_nothing_more():
    """Only the API and Flower stay published, on loopback; nodes and sentinels are not."""
    services = sentinel_compose()["services"]
    assert {name for name, s in services.items() if "ports" in s} == {"api", "flower"}


def test_compose_nodes_keep_data_never_evict_and_read_the_password_from_stdin():
    """Both nodes: AOF, maxmemory, noeviction, a volume; requirepass and masterauth from stdin."""
    services = sentinel_compose()["services"]
    for name in ("redis", "redis-replica"):
        script = shell(services[name])
        args = redis_server_args(script)
        assert args[0] == "-" and args[args.index("--maxmemory-policy") + 1] == "noeviction"
        assert args[args.index("--appendonly") + 1] == "yes"
        assert {"requirepass $REDISCLI_AUTH", "masterauth $REDISCLI_AUTH"} <= set(script.splitlines())
        assert any(v.endswith(":/data") for v in services[name]["volumes"])
        assert services[name]["env_file"] == ["secrets/redis.env"]


def test_no_secret_on_a_sentinel_mode_command_line():
    """No password on any command line of the override or the overlay; each comes as ``$VARIABLE``."""
    lines = [
        shell(s)
        for s in sentinel_compose()["services"].values()
        if "command" in s and s["command"][0] == "sh"
    ]
    lines += [container_script(d) for d in rendered() if d["kind"] == "StatefulSet"]
    assert len(lines) == 7
    for line in lines:
        assert not SECRET_OPTIONS.search(line)
        for value in re.findall(r"(?:requirepass|masterauth|auth-pass \S+)\s+(\S+)", line):
            assert value == "$REDISCLI_AUTH", line


def test_every_sluice_variable_of_sentinel_mode_is_a_real_setting():
    """No typo'd ``SLUICE_*`` name in the override or the overlay."""
    texts = [OVERRIDE.read_text(), *(p.read_text() for p in OVERLAY.glob("*.yaml"))]
    names = {m for text in texts for m in re.findall(r"\bSLUICE_[A-Z_]+[A-Z]\b", text)}
    assert {"SLUICE_REDIS_SENTINELS", "SLUICE_REDIS_SENTINEL_MASTER", "SLUICE_REDIS_PASSWORD"} <= names
    assert names <= SETTINGS, names - SETTINGS


# -- Kubernetes --------------------------------------------------------------------------------


def test_overlay_renders_and_validates_strictly():
    """Every built-in resource of the overlay validates against Kubernetes' schema, in the namespace."""
    docs = rendered()
    assert {"redis-sentinel"} <= set(named(docs, "StatefulSet")) and named(docs, "PodDisruptionBudget")
    for doc in docs:
        if doc["kind"] not in KEDA_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "sluice"


def test_overlay_sluice_pods_find_redis_through_the_sentinel_pods():
    """Sluice pods: no Redis URL, the password from sluice-redis-sentinel, the ConfigMap's sentinel
    addresses are the pods of the sentinel StatefulSet, and the settings load from them."""
    docs = rendered()
    for name, doc in named(docs, "Deployment").items():
        (container,) = pod_containers(doc)
        env = secret_env(container)
        assert "SLUICE_REDIS_URL" not in env, name
        assert env["SLUICE_REDIS_PASSWORD"] == ("sluice-redis-sentinel", "SLUICE_REDIS_PASSWORD"), name
        assert {"configMapRef": {"name": "sluice-config"}} in container["envFrom"], name
    config = named(docs, "ConfigMap")["sluice-config"]["data"]
    sentinels = named(docs, "StatefulSet")["redis-sentinel"]["spec"]
    service = named(docs, "Service")[sentinels["serviceName"]]["spec"]
    expected = {
        (f"redis-sentinel-{i}.{sentinels['serviceName']}", service["ports"][0]["port"])
        for i in range(sentinels["replicas"])
    }
    assert set(parse_addresses(config["SLUICE_REDIS_SENTINELS"])) == expected
    settings = load_settings({**config, "SLUICE_REDIS_PASSWORD": "x"})
    assert settings.redis_sentinel_master == "sluice" and settings.redis_wait_ms > 0
    assert re.search(
        r"^sentinel monitor sluice \$primary 6379 2$",
        container_script(named(docs, "StatefulSet")["redis-sentinel"]),
        re.MULTILINE,
    )


def test_overlay_runs_two_nodes_and_three_sentinels_on_the_redis_secret():
    """redis: two pods, the base's data rules; redis-sentinel: three, a quorum kept by a PDB."""
    statefulsets = named(rendered(), "StatefulSet")
    nodes, sentinels = statefulsets["redis"], statefulsets["redis-sentinel"]
    assert nodes["spec"]["replicas"] == 2 and sentinels["spec"]["replicas"] == 3
    args = redis_server_args(container_script(nodes))
    assert (
        args[args.index("--maxmemory-policy") + 1] == "noeviction" and nodes["spec"]["volumeClaimTemplates"]
    )
    for doc in (nodes, sentinels):
        (container,) = pod_containers(doc)
        assert secret_env(container) == {"REDISCLI_AUTH": ("sluice-redis", "REDISCLI_AUTH")}


def test_overlay_network_policies_fence_nodes_and_sentinels():
    """Nodes (6379) and sentinels (26379) admit the Sluice pods, each other and (nodes only) KEDA."""
    docs = rendered()
    clients = {
        pod_label(d) for d in docs for c in pod_containers(d) if "SLUICE_REDIS_PASSWORD" in secret_env(c)
    }
    assert clients == SLUICE_PODS
    policies = named(docs, "NetworkPolicy")
    for name, port in (("redis", 6379), ("redis-sentinel", 26379)):
        spec = policies[name]["spec"]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert spec["policyTypes"] == ["Ingress"]
        admitted: set[str] = set()
        outside = []
        for rule in spec["ingress"]:
            assert rule["ports"] == [{"protocol": "TCP", "port": port}]
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    outside.append(peer)
                    continue
                (expression,) = peer["podSelector"]["matchExpressions"]
                admitted |= set(expression["values"])
        assert admitted == clients | {"redis", "redis-sentinel"}, name
        assert len(outside) == (1 if name == "redis" else 0)


def test_make_secrets_covers_sentinel_mode(tmp_path):
    """sentinel.env holds the same password as Redis' file; the overlay's Secrets are all written."""
    assert make_secrets.main(["--dir", str(tmp_path)]) == 0
    files = {p.name: dict(ln.split("=", 1) for ln in p.read_text().splitlines()) for p in tmp_path.glob("*")}
    assert files["sentinel.env"]["SLUICE_REDIS_PASSWORD"] == files["redis.env"]["REDISCLI_AUTH"]
    produced = {(f.k8s_secret, var) for f in make_secrets.generate() for var in f.variables}
    used = {ref for d in rendered() for c in pod_containers(d) for ref in secret_env(c).values()}
    assert used <= produced


# -- the start scripts, run --------------------------------------------------------------------

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


def k8s_scripts() -> tuple[str, str]:
    """The overlay's node and sentinel start scripts."""
    statefulsets = named(rendered(), "StatefulSet")
    return container_script(statefulsets["redis"]), container_script(statefulsets["redis-sentinel"])


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
