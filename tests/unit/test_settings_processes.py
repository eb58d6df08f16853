"""Settings per process: each reads its own class once, the docs list every field, gunicorn and
Celery take what they were given."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from shared.settings import (
    ApiSettings,
    DeploySettings,
    Settings,
    SettingsError,
    SharedSettings,
    WorkerSettings,
    env_name,
)

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = re.compile(r"^\| `(SLUICE_[A-Z0-9_]+)` \|", re.MULTILINE)


def test_configuration_doc_lists_every_setting_and_nothing_else():
    """docs/CONFIGURATION.md has a row for each field, and each row names a field."""
    documented = DOCUMENTED.findall((ROOT / "docs" / "CONFIGURATION.md").read_text())
    assert len(documented) == len(set(documented)), "a variable documented twice"
    fields = {env_name(name) for name in Settings.model_fields}
    assert set(documented) - fields == set(), "documented but not a setting"
    assert fields - set(documented) == set(), "a setting the docs do not list"


def test_configuration_doc_says_which_process_reads_which():
    """The "Which process reads which" table lists exactly each class's own variables."""
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text().split("## Which process reads which", 1)[1]
    rows = {
        m[0]: set(re.findall(r"`(SLUICE_[A-Z0-9_]+)`", m[1]))
        for m in re.findall(r"^\| `(\w+)` \|(.*)$", text, re.M)
    }
    shared = set(SharedSettings.model_fields)
    for cls in (SharedSettings, ApiSettings, WorkerSettings, DeploySettings):
        own = {env_name(n) for n in cls.model_fields if cls is SharedSettings or n not in shared}
        assert rows.get(cls.__name__) == own, cls.__name__


def test_every_field_belongs_to_a_process():
    """``Settings`` adds nothing of its own: each field is read by the API, a worker or the deploy tools."""
    union = (
        set(ApiSettings.model_fields) | set(WorkerSettings.model_fields) | set(DeploySettings.model_fields)
    )
    assert union == set(Settings.model_fields)
    assert set(SharedSettings.model_fields) <= set(ApiSettings.model_fields) & set(
        WorkerSettings.model_fields
    )


def test_a_process_reads_only_its_own_variables():
    """The API ignores a worker's variable (even a bad one); the worker refuses it, naming it."""
    api = ApiSettings.from_env({"SLUICE_COALESCE_MS": "-1", "SLUICE_MAX_BODY_BYTES": "10"})
    assert api.max_body_bytes == 10 and not hasattr(api, "coalesce_ms")
    with pytest.raises(SettingsError, match="SLUICE_COALESCE_MS"):
        WorkerSettings.from_env({"SLUICE_COALESCE_MS": "-1", "SLUICE_MAX_BODY_BYTES": "10"})
    worker = WorkerSettings.from_env({"SLUICE_MAX_BODY_BYTES": "nonsense"})
    assert not hasattr(worker, "max_body_bytes")


def test_building_directly_reads_no_environment(monkeypatch):
    """Only ``from_env`` reads the environment: a settings object built in code is just its values."""
    monkeypatch.setenv("SLUICE_PORT", "9999")
    monkeypatch.setenv("SLUICE_LOCK_LEASE_SECONDS", "0")
    assert Settings().port == 8000 and ApiSettings(max_body_bytes=5).port == 8000
    assert ApiSettings.from_env().port == 9999
    with pytest.raises(SettingsError, match="SLUICE_LOCK_LEASE_SECONDS"):
        WorkerSettings.from_env()


def test_values_given_in_code_are_checked_and_frozen():
    """A value out of range is refused in code too, and settings cannot be changed once built."""
    with pytest.raises(ValidationError):
        ApiSettings(port=0)
    settings = WorkerSettings()
    with pytest.raises(ValidationError):
        settings.coalesce_ms = 1.0  # type: ignore[misc]


def test_empty_values_mean_unset():
    """An empty optional string, address list or metrics port is unset, as before."""
    settings = Settings.from_env(
        {
            "SLUICE_API_KEYS": "",
            "SLUICE_REDIS_SENTINELS": " ",
            "SLUICE_WORKER_METRICS_PORT": "",
            "SLUICE_MODEL_PATH": "",
        }
    )
    assert settings.api_keys is None and settings.redis_sentinels is None
    assert settings.worker_metrics_port == 0 and settings.model_path is None


def test_lists_and_names_are_parsed():
    """Sentinels are normalised, the retry schedule is comma-separated (not JSON), log levels any case."""
    settings = Settings.from_env(
        {
            "SLUICE_REDIS_SENTINELS": " a:1 , b:26379",
            "SLUICE_WEBHOOK_RETRY_SCHEDULE": "1, 2,3",
            "SLUICE_LOG_LEVEL": "debug",
            "SLUICE_REDIS_SENTINEL_MASTER": " main ",
        }
    )
    assert settings.redis_sentinels == "a:1,b:26379"
    assert settings.webhook_retry_schedule == (1, 2, 3)
    assert settings.log_level == "DEBUG" and settings.redis_sentinel_master == "main"
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "SLUICE_REDIS_SENTINELS": "a",
                "SLUICE_WEBHOOK_RETRY_SCHEDULE": "[1]",
                "SLUICE_REDIS_SENTINEL_MASTER": " ",
            }
        )
    for name in ("SLUICE_REDIS_SENTINELS", "SLUICE_WEBHOOK_RETRY_SCHEDULE", "SLUICE_REDIS_SENTINEL_MASTER"):
        assert name in str(raised.value)


def test_a_list_field_that_cannot_be_decoded_is_a_settings_error():
    """A list field without ``NoDecode`` (read as JSON) fails as ``SettingsError`` naming its variable."""

    class WithList(SharedSettings):
        nodes: list[int] = []

    assert WithList.from_env({"SLUICE_NODES": "[1, 2]"}).nodes == [1, 2]
    with pytest.raises(SettingsError, match="SLUICE_NODES"):
        WithList.from_env({"SLUICE_NODES": "1,2"})


def test_non_finite_numbers_are_refused():
    """``nan`` and ``inf`` are not intervals."""
    with pytest.raises(SettingsError, match="SLUICE_PING_INTERVAL_SECONDS"):
        ApiSettings.from_env({"SLUICE_PING_INTERVAL_SECONDS": "nan"})
    with pytest.raises(SettingsError, match="SLUICE_COALESCE_MS"):
        WorkerSettings.from_env({"SLUICE_COALESCE_MS": "inf"})


def test_secrets_stay_out_of_repr_and_errors():
    """The Redis URL and password, Flower's credentials and API keys never show in repr()."""
    settings = Settings(
        redis_url="redis://:url-secret@h:1/0",
        redis_password="pw-secret",
        flower_basic_auth="u:flower-secret",
        api_keys="key-secret",
        operator_api_keys="op-secret",
    )
    shown = repr(settings) + str(settings)
    for secret in ("url-secret", "pw-secret", "flower-secret", "key-secret", "op-secret"):
        assert secret not in shown


def test_deploy_settings_know_which_variables_were_set():
    """``make run`` starts its own Redis only when no URL was given (the default URL is not "given")."""
    assert "redis_url" not in DeploySettings.from_env({}).model_fields_set
    given = DeploySettings.from_env({"SLUICE_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert "redis_url" in given.model_fields_set


def test_gunicorn_takes_bind_and_processes_from_the_api_settings(monkeypatch):
    """gunicorn's config builds the API settings once and binds, forks and sizes from them."""
    monkeypatch.setenv("SLUICE_HOST", "127.0.0.2")
    monkeypatch.setenv("SLUICE_PORT", "9123")
    monkeypatch.setenv("SLUICE_API_WORKERS", "3")
    monkeypatch.setenv("SLUICE_API_WORKER_CONNECTIONS", "17")
    conf = runpy.run_path(str(ROOT / "api" / "gunicorn_conf.py"))
    assert conf["bind"] == "127.0.0.2:9123"
    assert (conf["workers"], conf["worker_connections"]) == (3, 17)
    assert isinstance(conf["api_settings"], ApiSettings)


def test_gunicorn_refuses_a_bad_variable_by_name(monkeypatch):
    """A bad value stops gunicorn's master with one line naming the variable, not a traceback."""
    monkeypatch.setenv("SLUICE_API_WORKER_CONNECTIONS", "0")
    with pytest.raises(SystemExit, match="SLUICE_API_WORKER_CONNECTIONS"):
        runpy.run_path(str(ROOT / "api" / "gunicorn_conf.py"))


def test_a_worker_process_builds_one_runtime(monkeypatch, redis_url):
    """The heartbeat, the feeder and the tasks of one process share one runtime, built once; a
    prefork child builds its own after the fork."""
    from workers import celery_app

    built: list[object] = []
    real = celery_app.build_runtime

    def counting(settings: WorkerSettings) -> object:
        runtime = real(settings)
        built.append(runtime)
        return runtime

    monkeypatch.setattr(celery_app, "build_runtime", counting)
    settings = Settings(redis_url=redis_url, preload=False)
    app = celery_app.create_celery(settings)
    assert celery_app.app_settings(app) is settings
    sender = SimpleNamespace(app=app, hostname="w-one-runtime@test", pool=None)
    celery_app._start_heartbeat(sender=sender)
    try:
        context = celery_app.context_of(app)
        assert context is not None and context.heartbeat is not None
        assert celery_app.runtime_of(app) is context.heartbeat.runtime is built[0]
        assert len(built) == 1
    finally:
        celery_app._stop_heartbeat(sender=sender)
    celery_app._load_models_after_fork()  # as in a prefork child: the current app's context
    assert len(built) == 2 and celery_app.runtime_of(app) is built[1]
    assert context.heartbeat is None and context.feeder is None


def test_upstream_providers_take_the_private_url_switch_from_the_worker_settings():
    """An OpenAI-compatible provider takes ``SLUICE_UPSTREAM_ALLOW_PRIVATE_URLS`` from its settings."""
    from shared.models import ModelSpec
    from workers.providers.registry import build_provider

    spec = ModelSpec(id="m", provider="openai", base_url="http://127.0.0.1:9/v1")
    allowed = build_provider(spec, WorkerSettings(upstream_allow_private_urls=True))
    refused = build_provider(spec, WorkerSettings())
    assert allowed.allow_private_urls is True and refused.allow_private_urls is False  # type: ignore[attr-defined]
