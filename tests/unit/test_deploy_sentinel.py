"""deploy/'s Sentinel mode: the compose override and the k8s-sentinel overlay validate, keep secrets
off command lines, and point every Sluice process at the sentinels they start.

Like test_deploy.py: no Docker engine or cluster. The override is merged into the base file by
Compose's rules and checked against the Compose specification; the overlay is rendered by
``kubectl kustomize`` and checked against Kubernetes' schemas. The start scripts themselves run
in ``test_deploy_sentinel_scripts.py`` (stand-ins) and ``tests/ha/test_deploy_scripts.py`` (real).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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


def k8s_scripts() -> tuple[str, str]:
    """The overlay's node and sentinel start scripts."""
    statefulsets = named(rendered(), "StatefulSet")
    return container_script(statefulsets["redis"]), container_script(statefulsets["redis-sentinel"])
