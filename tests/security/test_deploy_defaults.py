"""Secure defaults: no open API on a public address, no secret in repr, Celery's conf or logs,
and a full Redis refuses new work instead of evicting queued work."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis
import yaml
from celery import Celery
from celery.worker.control import conf as conf_command

from api.app import create_app
from api.exposure import is_loopback, open_api_refusal
from deploy.probes import free_port, http_ok, port_open, wait_for
from deploy.stack import ROOT, Stack
from shared.celery_config import celery_config
from shared.keys import broker_list
from shared.settings import Settings, load_settings
from tests.integration.helpers import observe
from tests.integration.stacks import SCRIPTED_MODELS, hostname, wait_workers
from workers.celery_app import app_settings, create_celery

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]
NOWHERE = "redis://127.0.0.1:9/0"


def api_environ(**env: str) -> dict[str, str]:
    """The test's environment without its ``SLUICE_*`` variables, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "FLOWER_"))}
    environ.update(PYTHONPATH=str(ROOT), SLUICE_REDIS_URL=NOWHERE, SLUICE_LOG_JSON="true", **env)
    return environ


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    """Addresses and names of this machine only count as loopback."""
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.7", "192.168.1.2", "sluice.example"])
def test_public_or_unknown_hosts(host):
    """Wildcards, private and public addresses and other names are not loopback."""
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "env",
    [{"SLUICE_HOST": "0.0.0.0"}, {"SLUICE_HOST": "10.1.2.3", "SLUICE_ALLOW_OPEN_API": "false"}],
    ids=["wildcard", "address-opt-in-false"],
)
def test_api_refuses_a_public_bind_without_keys(env):
    """gunicorn exits non-zero before binding, and says why and what to set."""
    port = free_port()
    done = subprocess.run(
        GUNICORN,
        cwd=ROOT,
        env=api_environ(SLUICE_PORT=str(port), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"refusing to serve the API on SLUICE_HOST={env['SLUICE_HOST']} without API keys" in done.stderr
    for setting in ("SLUICE_API_KEYS", "SLUICE_API_KEYS_FILE", "SLUICE_ALLOW_OPEN_API=true", "127.0.0.1"):
        assert setting in done.stderr
    assert "Listening at" not in done.stderr and not port_open(port)


def test_api_refuses_a_public_bind_with_an_empty_or_missing_keys_file(tmp_path):
    """A keys file with no key (only comments), or none at all, is no key."""
    empty = tmp_path / "keys"
    empty.write_text("# nobody yet\n\n")
    for path in (empty, tmp_path / "missing"):
        settings = Settings(host="0.0.0.0", api_keys_file=str(path))
        assert open_api_refusal(settings) is not None


@pytest.mark.parametrize(
    "env",
    [
        {"SLUICE_HOST": "127.0.0.1"},
        {"SLUICE_HOST": "0.0.0.0", "SLUICE_API_KEYS": "sk-one,sk-two"},
        {"SLUICE_HOST": "0.0.0.0", "SLUICE_API_KEYS_FILE": "{keys_file}"},
        {"SLUICE_HOST": "0.0.0.0", "SLUICE_ALLOW_OPEN_API": "true"},
    ],
    ids=["loopback", "keys", "keys-file", "explicitly-open"],
)
def test_api_starts_on_loopback_with_keys_or_when_told_to(env, tmp_path):
    """Loopback, keys (inline or in a file) or SLUICE_ALLOW_OPEN_API=true: gunicorn serves /health."""
    keys = tmp_path / "keys"
    keys.write_text("# ops\nsk-from-file\n")
    port = free_port()
    env = {k: v.format(keys_file=keys) for k, v in env.items()}
    process = subprocess.Popen(
        GUNICORN,
        cwd=ROOT,
        env=api_environ(SLUICE_PORT=str(port), **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: process.poll() is None and http_ok(f"http://127.0.0.1:{port}/health"), 60, "the API")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert "refusing" not in stderr


def test_settings_repr_shows_no_secret():
    """repr(Settings) (in tracebacks, debug logs) carries neither the Redis password nor any login."""
    settings = load_settings(
        {
            "SLUICE_REDIS_URL": "redis://:redis-pw-123@redis:6379/0",
            "SLUICE_FLOWER_BASIC_AUTH": "ops:flower-pw-456",
            "SLUICE_API_KEYS": "sk-key-789",
        }
    )
    shown = repr(settings) + str(settings)
    for secret in ("redis-pw-123", "flower-pw-456", "sk-key-789"):
        assert secret not in shown
    assert settings.redis_url.endswith("@redis:6379/0") and "host='127.0.0.1'" in shown


def test_celery_conf_served_to_inspectors_holds_no_secret():
    """What ``celery inspect conf`` and Flower's worker page get has no password; the settings
    are reachable from the app, outside its conf."""
    settings = Settings(
        redis_url="redis://:redis-pw-123@127.0.0.1:9/0", flower_basic_auth="ops:flower-pw-456"
    )
    app = create_celery(settings)
    assert app_settings(app) is settings
    for with_defaults in (False, True):
        served = json.dumps(conf_command(SimpleNamespace(app=app), with_defaults=with_defaults))
        assert "redis-pw-123" not in served and "flower-pw-456" not in served
        assert "Settings(" not in served
    assert not any(isinstance(value, Settings) for value in app.conf.values())


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A redis-server of this test's own (its memory limits are changed)."""
    stack = Stack(tmp_path / "redis")
    url = stack.start_redis(persistent=False)
    client = redis.Redis.from_url(url, decode_responses=True)
    yield client
    client.close()
    stack.stop()


@pytest.mark.parametrize("rate_limit", [0, 600], ids=["no-rate-limit", "rate-limited"])
def test_a_full_redis_refuses_new_work_and_keeps_queued_work(small_redis, tmp_path, rate_limit):
    """With the deploy's eviction policy a Redis at maxmemory drops nothing: a submit is 529 with
    Retry-After, and the queued task, its message and every other key survive."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    script = compose["services"]["redis"]["command"][2]
    policy = script.split("--maxmemory-policy", 1)[1].split()[0]
    assert policy == "noeviction"
    queue = "sluice.test-full"
    models = tmp_path / "models.toml"
    models.write_text(f'[models.scripted]\nprovider = "scripted"\nqueue = "{queue}"\n')
    url = small_redis.connection_pool.connection_kwargs
    http = create_app(
        Settings(
            redis_url=f"redis://127.0.0.1:{url['port']}/0",
            models_file=str(models),
            rate_limit_per_minute=rate_limit,
        )
    ).test_client()
    body = {"model": "scripted", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    accepted = http.post("/v1/messages/async", json=body)
    assert accepted.status_code == 200, accepted.json
    message_id = accepted.json["message_id"]
    small_redis.mset({f"filler:{n}": "x" * 4096 for n in range(200)})
    keys_before = small_redis.dbsize()
    # Half of what is used: any eviction policy would now drop keys to get under the limit.
    small_redis.config_set("maxmemory-policy", policy)
    small_redis.config_set("maxmemory", int(small_redis.info("memory")["used_memory"]) // 2)
    refused = http.post("/v1/messages/async", json=body)
    assert refused.status_code == 529, refused.json
    assert refused.json["error"]["type"] == "overloaded_error"
    assert int(refused.headers["Retry-After"]) >= 1
    assert small_redis.dbsize() == keys_before
    assert small_redis.info("stats")["evicted_keys"] == 0
    tasks = [
        json.loads(raw) for band in range(10) for raw in small_redis.lrange(broker_list(queue, band), 0, -1)
    ]
    assert len(tasks) == 1
    assert http.get(f"/v1/messages/async/{message_id}/status").json["status"] == "pending"


@pytest.mark.integration
def test_a_stack_with_secrets_works_and_shows_them_nowhere(tmp_path):
    """API (with keys), a worker and Flower on a password-protected Redis: the work gets done,
    Flower wants its login, and neither a command line, ``inspect conf`` nor a log line shows a secret."""
    password, key = secrets.token_hex(16), "sk-" + secrets.token_hex(16)
    flower_login = "ops:" + secrets.token_hex(12)
    models = tmp_path / "models.toml"
    models.write_text(SCRIPTED_MODELS)
    stack = Stack(
        tmp_path / "var",
        env={"SLUICE_MODELS_FILE": str(models), "SLUICE_LOG_JSON": "true", "SLUICE_API_KEYS": key},
    )
    name = hostname("secrets")
    try:
        url = stack.start_redis(persistent=False, password=password)
        stack.start_worker(name, queues="sluice.local", pool="prefork", concurrency=1)
        api = stack.start_api()
        flower_port = free_port()
        flower = stack.start_flower(flower_port, flower_login)
        wait_workers(api, [name])
        headers = {"x-api-key": key}
        submitted = httpx.post(
            f"{api}/v1/messages/async",
            json={"model": "quick", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
            timeout=10,
        )
        assert submitted.status_code == 200, submitted.text
        frames = observe(api, submitted.json()["message_id"], headers=headers)
        assert frames[-1].event == "message_stop"
        assert httpx.get(flower, timeout=10).status_code == 401
        assert httpx.get(flower, auth=tuple(flower_login.split(":")), timeout=10).status_code == 200
        inspector = Celery("inspector", set_as_current=False)
        inspector.conf.update(celery_config(Settings(redis_url=url)))
        try:
            replies = inspector.control.inspect(timeout=5).conf() or {}
        finally:
            inspector.close()
        assert any(worker.startswith(name + "@") for worker in replies), replies
        served = json.dumps(replies)
        assert "broker_url" in served and password not in served and "Settings(" not in served
        secrets_shown = [s.encode() for s in (password, key, flower_login)]
        for process in stack.processes:
            cmdline = Path(f"/proc/{process.popen.pid}/cmdline").read_bytes()
            assert not any(s in cmdline for s in secrets_shown), process.name
    finally:
        stack.stop()
    logs = {p.name: p.read_bytes() for p in (tmp_path / "var").glob("*.log")}
    assert {"api", "worker", "flower"} <= {n.split("-", 1)[0] for n in logs}, sorted(logs)
    assert any(b":**@127.0.0.1" in text for text in logs.values())  # the broker URL, masked
    for log_name, text in logs.items():
        assert not any(s in text for s in secrets_shown), log_name
