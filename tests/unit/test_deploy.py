"""deploy/: the compose file and Kubernetes manifests validate and agree with the code.

No Docker engine or Kubernetes cluster runs here: the compose file is checked against the
Compose specification (compose-spec), the manifests against Kubernetes' JSON schemas
(kubernetes-validate, strict), and both against the settings, queues and modules they name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml
from compose_spec import PyCompose
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploy import make_secrets
from deploy.probes import free_port, port_open, wait_for
from shared.celery_config import LOCAL_QUEUE, UPSTREAM_QUEUE
from shared.keys import broker_list
from shared.models import parse_registry
from shared.priority import PRIORITY_STEPS
from shared.settings import ENV_PREFIX, Settings, env_name

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.32"
SETTINGS = {env_name(name) for name in Settings.model_fields}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def manifests() -> list[dict[str, Any]]:
    """Every document of deploy/k8s, as kustomization.yaml lists them."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def redis_server_args(script: str) -> list[str]:
    """The arguments of the ``exec redis-server - ...`` line of a Redis start script."""
    (line,) = [line for line in script.splitlines() if line.startswith("exec redis-server")]
    return shlex.split(line.split("<<", 1)[0])[2:]


def compose_redis_script() -> str:
    """The compose Redis service's start script, with Compose's ``$$`` escapes undone."""
    command = compose()["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    return str(command[2]).replace("$$", "$")


def k8s_redis_container() -> dict[str, Any]:
    container: dict[str, Any] = by_kind("StatefulSet")["redis"]["spec"]["template"]["spec"]["containers"][0]
    return container


def k8s_redis_script() -> str:
    """The Kubernetes Redis container's start script."""
    container = k8s_redis_container()
    assert container["command"] == ["sh", "-c"]
    return str(container["args"][0])


def option(argv: list[str], name: str) -> str:
    """The value of ``--name=value`` in a worker command."""
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def test_compose_file_follows_the_compose_specification():
    """The compose file (YAML merge keys resolved, as Compose does) parses as a valid Compose project."""
    project = PyCompose.from_json(json.dumps(compose()))
    assert set(project.service_names()) == {
        "redis",
        "api",
        "worker",
        "worker-upstream",
        "worker-webhooks",
        "flower",
    }
    project.to_spec()


def test_compose_redis_keeps_data_and_never_evicts():
    """Redis runs with AOF on, a maxmemory and ``noeviction`` on a named volume."""
    redis = compose()["services"]["redis"]
    args = redis_server_args(compose_redis_script())
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1].endswith("mb")
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_workers_scale_and_match_the_worker_types():
    """``worker`` is prefork on the local queue, ``worker-upstream`` threads; neither pins ports or names."""
    services = compose()["services"]
    for name, queue, pool in (
        ("worker", LOCAL_QUEUE, "prefork"),
        ("worker-upstream", UPSTREAM_QUEUE, "threads"),
    ):
        service = services[name]
        argv = service["command"]
        assert argv[:4] == ["celery", "-A", "workers.main", "worker"] and "-E" in argv
        assert (option(argv, "queues"), option(argv, "pool")) == (queue, pool)
        assert option(argv, "hostname").endswith("@%h")
        assert "ports" not in service and "container_name" not in service


def test_every_sluice_variable_in_deploy_is_a_real_setting():
    """No typo'd ``SLUICE_*`` name in the compose file, the manifests or the Dockerfile."""
    texts = [p.read_text() for p in [*DEPLOY.glob("*.yml"), DEPLOY / "Dockerfile", *K8S.glob("*.yaml")]]
    names = {m for text in texts for m in re.findall(rf"\b{ENV_PREFIX}[A-Z_]+[A-Z]\b", text)}
    assert names and names <= SETTINGS, names - SETTINGS


def test_images_registry_routes_the_default_model_to_the_local_queue():
    """deploy/models.toml and the ConfigMap's copy are one valid registry; every queue has a worker."""
    shipped = (DEPLOY / "models.toml").read_text()
    in_k8s = by_kind("ConfigMap")["sluice-models"]["data"]["models.toml"]
    for text in (shipped, in_k8s):
        registry = parse_registry(text, Settings())
        assert registry.resolve("default").queue == LOCAL_QUEUE
        assert registry.queues() <= {LOCAL_QUEUE, UPSTREAM_QUEUE}
    assert parse_registry(shipped, Settings()).names() == parse_registry(in_k8s, Settings()).names()


def test_image_commands_name_modules_that_exist():
    """The Dockerfile's API command and entry point refer to real files and modules."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert '"python:api.gunicorn_conf", "api.wsgi:app"' in dockerfile
    for module in ("api.gunicorn_conf", "api.wsgi", "workers.main"):
        assert importlib.util.find_spec(module) is not None, module
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE):
        assert (DEPLOY.parent / source).exists(), source
    assert os.access(DEPLOY / "docker-entrypoint.sh", os.X_OK)


#: KEDA's custom resources: no built-in schema to check them against.
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


@pytest.mark.parametrize(
    "doc", [d for d in manifests() if d["kind"] not in KEDA_KINDS], ids=lambda d: d["kind"]
)
def test_kubernetes_manifests_validate_strictly(doc):
    """Each built-in resource validates against Kubernetes' schema, unknown fields refused."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_worker_deployments_consume_the_queues_their_scalers_watch():
    """Each ScaledObject targets a worker Deployment and lists all ten kombu lists of its queue."""
    deployments = by_kind("Deployment")
    scaled = by_kind("ScaledObject")
    assert set(scaled) == {"sluice-worker-local", "sluice-worker-upstream"}
    for obj in scaled.values():
        target = deployments[obj["spec"]["scaleTargetRef"]["name"]]
        argv = target["spec"]["template"]["spec"]["containers"][0]["args"]
        queue = option(argv, "queues")
        lists = [t["metadata"]["listName"] for t in obj["spec"]["triggers"] if t["type"] == "redis"]
        assert lists == [broker_list(queue, band) for band in PRIORITY_STEPS]
        assert all(t["metadata"]["address"].startswith("redis.sluice.svc") for t in obj["spec"]["triggers"])
        assert {t["authenticationRef"]["name"] for t in obj["spec"]["triggers"]} == {"sluice-redis"}


def test_kubernetes_redis_never_evicts_and_appends_only():
    """The Redis StatefulSet runs with AOF, a maxmemory below its limit and ``noeviction`` on a volume."""
    redis = by_kind("StatefulSet")["redis"]
    args = redis_server_args(k8s_redis_script())
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = args[args.index("--maxmemory") + 1]
    limit = k8s_redis_container()["resources"]["limits"]["memory"]
    assert maxmemory.endswith("mb") and limit.endswith("Gi")
    assert int(maxmemory[:-2]) * 2**20 < int(limit[:-2]) * 2**30
    assert redis["spec"]["volumeClaimTemplates"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomization_builds():
    """``kubectl kustomize deploy/k8s`` renders every resource into the sluice namespace."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert len(docs) == len(manifests())
    assert all(d["metadata"].get("namespace") == "sluice" for d in docs if d["kind"] != "Namespace")


# -- Secure defaults (issue 13): loopback, passwords, no secret on a command line, network fences.

#: Command-line options that would carry a secret (Redis' and redis-cli's, Flower's).
SECRET_OPTIONS = re.compile(r"--requirepass|--masterauth|--basic-auth|(^|\s)-a\s|redis://:[^@$]")


def command_lines() -> dict[str, str]:
    """Every command line of deploy/: compose commands and health checks, k8s commands, args and probes."""
    lines: dict[str, str] = {}
    for name, service in compose()["services"].items():
        for key in ("command", "entrypoint"):
            if key in service:
                value = service[key]
                lines[f"compose {name} {key}"] = value if isinstance(value, str) else " ".join(value)
        if "healthcheck" in service:
            lines[f"compose {name} healthcheck"] = " ".join(service["healthcheck"]["test"])
    for doc in manifests():
        for container in pod_containers(doc):
            where = f"k8s {doc['metadata']['name']}/{container['name']}"
            lines[f"{where} command"] = " ".join([*container.get("command", []), *container.get("args", [])])
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "exec" in container.get(probe, {}):
                    lines[f"{where} {probe}"] = " ".join(container[probe]["exec"]["command"])
    return lines


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a Deployment's or StatefulSet's pod template (none for other kinds)."""
    if doc["kind"] not in {"Deployment", "StatefulSet"}:
        return []
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def secret_env(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Variables a container takes from Secrets: name -> (Secret, key)."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def pod_label(doc: dict[str, Any]) -> str:
    return str(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])


def test_compose_publishes_every_port_on_loopback_only():
    """The API and Flower are published on the host's 127.0.0.1; Redis and workers not at all."""
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"api", "flower"}
    for ports in published.values():
        assert all(str(p).startswith("127.0.0.1:") for p in ports), ports


def test_no_secret_on_any_command_line():
    """No password, key or login in a command, argument list or probe; Redis' comes as ``$VARIABLE``."""
    lines = command_lines()
    assert any("redis-server" in line for line in lines.values())
    for where, line in lines.items():
        assert not SECRET_OPTIONS.search(line), where
        for value in re.findall(r"requirepass\s+(\S+)", line):
            assert value.startswith("$") and value.strip("$").isupper(), where


def test_redis_password_comes_from_secrets_in_compose_and_kubernetes():
    """Redis reads REDISCLI_AUTH from secrets/redis.env (compose) and the Secret sluice-redis (k8s)."""
    for script in (compose_redis_script(), k8s_redis_script()):
        assert "requirepass $REDISCLI_AUTH" in script.splitlines()
        assert redis_server_args(script)[0] == "-"  # config (the password) read from stdin
    assert compose()["services"]["redis"]["env_file"] == ["secrets/redis.env"]
    assert secret_env(k8s_redis_container()) == {"REDISCLI_AUTH": ("sluice-redis", "REDISCLI_AUTH")}


def test_secrets_named_in_deploy_are_the_ones_make_secrets_writes():
    """Each env file compose reads and each (Secret, key) the manifests use comes from make_secrets."""
    written = {f.filename: f for f in make_secrets.generate()}
    for name, service in compose()["services"].items():
        for path in service.get("env_file", []):
            assert path.startswith("secrets/") and path.removeprefix("secrets/") in written, (name, path)
    produced = {(f.k8s_secret, var) for f in written.values() for var in f.variables}
    used = {ref for doc in manifests() for c in pod_containers(doc) for ref in secret_env(c).values()}
    triggers = by_kind("TriggerAuthentication")["sluice-redis"]["spec"]["secretTargetRef"]
    used |= {(t["name"], t["key"]) for t in triggers}
    used |= {ref for path in (DEPLOY / "k8s-sentinel").glob("*.yaml") for ref in secret_refs(path)}
    assert used == produced


def secret_refs(path: Path) -> set[tuple[str, str]]:
    """Every ``secretKeyRef`` (Secret, key) anywhere in a YAML file (Sentinel mode's overlay)."""
    found: set[tuple[str, str]] = set()
    todo: list[Any] = list(yaml.safe_load_all(path.read_text()))
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                found.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found
    assert "SLUICE_REDIS_URL" not in by_kind("ConfigMap")["sluice-config"]["data"]


def test_every_sluice_pod_gets_the_redis_url_and_the_api_its_keys_from_secrets():
    """Pods of the API, workers and Flower take SLUICE_REDIS_URL from a Secret; the API its keys."""
    for name, doc in by_kind("Deployment").items():
        (container,) = pod_containers(doc)
        env = secret_env(container)
        assert env["SLUICE_REDIS_URL"] == ("sluice-redis-url", "SLUICE_REDIS_URL"), name
        assert ("SLUICE_API_KEYS" in env) == (name == "sluice-api"), name
    for name, service in compose()["services"].items():
        if name != "redis":
            assert "secrets/sluice.env" in service["env_file"], name
    assert "secrets/api.env" in compose()["services"]["api"]["env_file"]


def test_flower_login_comes_from_a_secret_through_the_environment():
    """Flower's FLOWER_BASIC_AUTH comes from a required Secret (k8s) or secrets/flower.env (compose)."""
    (container,) = pod_containers(by_kind("Deployment")["sluice-flower"])
    assert secret_env(container)["FLOWER_BASIC_AUTH"] == ("sluice-flower", "FLOWER_BASIC_AUTH")
    (ref,) = [e for e in container["env"] if e["name"] == "FLOWER_BASIC_AUTH"]
    assert not ref["valueFrom"]["secretKeyRef"].get("optional", False)
    assert "secrets/flower.env" in compose()["services"]["flower"]["env_file"]
    assert "basic" not in " ".join(container["args"]) + " ".join(compose()["services"]["flower"]["command"])


def test_network_policy_lets_only_sluice_pods_and_keda_reach_redis():
    """Redis' NetworkPolicy admits, on 6379, exactly the pods that carry SLUICE_REDIS_URL (and KEDA)."""
    policy = by_kind("NetworkPolicy")["redis"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    assert policy["policyTypes"] == ["Ingress"]
    in_namespace: set[str] = set()
    for rule in policy["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
        for peer in rule["from"]:
            if "namespaceSelector" in peer:  # the KEDA operator, nothing else from outside
                assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
                assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}}
                continue
            (expression,) = peer["podSelector"]["matchExpressions"]
            assert (expression["key"], expression["operator"]) == ("app.kubernetes.io/name", "In")
            in_namespace |= set(expression["values"])
    clients = {
        pod_label(doc)
        for doc in manifests()
        for c in pod_containers(doc)
        if "SLUICE_REDIS_URL" in secret_env(c)
    }
    assert (
        in_namespace
        == clients
        == {
            "sluice-api",
            "sluice-worker-local",
            "sluice-worker-upstream",
            "sluice-worker-webhooks",
            "sluice-flower",
        }
    )


def test_flower_is_internal_and_fenced_to_ops_namespaces():
    """Flower's Service is a ClusterIP and its NetworkPolicy admits only namespaces labelled for ops."""
    service = by_kind("Service")["sluice-flower"]["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    policy = by_kind("NetworkPolicy")["sluice-flower"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "sluice-flower"}
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"sluice/ops": "true"}}}]
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in by_kind("Service").values())


def test_make_secrets_writes_private_files_that_agree(tmp_path):
    """One password in Redis' file and in the URL; owner-only files; an existing set is not replaced."""
    folder = tmp_path / "secrets"
    assert make_secrets.main(["--dir", str(folder)]) == 0
    files = {p.name: dict(ln.split("=", 1) for ln in p.read_text().splitlines()) for p in folder.glob("*")}
    assert all((folder / name).stat().st_mode & 0o777 == 0o600 for name in files)
    password = files["redis.env"]["REDISCLI_AUTH"]
    assert len(password) >= 32
    assert files["sluice.env"]["SLUICE_REDIS_URL"] == f"redis://:{password}@redis:6379/0"
    assert Settings(api_keys=files["api.env"]["SLUICE_API_KEYS"]).api_keys
    user, _, flower_password = files["flower.env"]["FLOWER_BASIC_AUTH"].partition(":")
    assert user and len(flower_password) >= 16
    before = (folder / "redis.env").read_text()
    assert make_secrets.main(["--dir", str(folder)]) == 1
    assert (folder / "redis.env").read_text() == before


def command_lines_of_every_process() -> list[bytes]:
    """``/proc/<pid>/cmdline`` of every process this user may read (NUL-separated arguments)."""
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours
            lines.append(path.read_bytes())
    return lines


@pytest.mark.parametrize("script", [compose_redis_script, k8s_redis_script], ids=["compose", "k8s"])
def test_redis_start_script_requires_the_password_without_showing_it(script, tmp_path):
    """The shipped start script, run by ``sh``: Redis wants the password, caps memory, never evicts,
    and no process's command line carries the password."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port, password = free_port(), secrets.token_hex(16)
    shim = tmp_path / "bin" / "redis-server"  # the real server, on a free port in a scratch folder
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {server} "$@" --port {port} --bind 127.0.0.1 --dir {tmp_path}\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim.parent}:{os.environ['PATH']}", "REDISCLI_AUTH": password}
    log = (tmp_path / "redis.log").open("wb")
    argv = ["sh", "-c", script()]
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: port_open(port), 20, "redis-server from the start script")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, retry=Retry(NoBackoff(), 0)).ping()
        client = redis.Redis(port=port, password=password, decode_responses=True)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        args = redis_server_args(script())
        maxmemory_mb = int(args[args.index("--maxmemory") + 1].removesuffix("mb"))
        assert int(client.config_get("maxmemory")["maxmemory"]) == maxmemory_mb * 2**20
        cmdlines = command_lines_of_every_process()
        assert any(f":{port}".encode() in c for c in cmdlines)  # redis-server, under its own title
        assert not any(password.encode() in c for c in cmdlines)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
        log.close()
