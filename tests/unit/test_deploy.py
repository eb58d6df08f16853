"""deploy/: the compose file and Kubernetes manifests validate and agree with the code.

No Docker engine or Kubernetes cluster runs here: the compose file is checked against the
Compose specification (compose-spec), the manifests against Kubernetes' JSON schemas
(kubernetes-validate, strict), and both against the settings, queues and modules they name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from shared.celery_config import LOCAL_QUEUE, UPSTREAM_QUEUE
from shared.keys import broker_list
from shared.models import parse_registry
from shared.priority import PRIORITY_STEPS
from shared.settings import ENV_PREFIX, Settings, env_name

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.32"
SETTINGS = {env_name(name) for name in Settings.__dataclass_fields__}


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
    assert set(project.service_names()) == {"redis", "api", "worker", "worker-upstream", "flower"}
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
