"""Settings come from SLUICE_* variables, strictly parsed."""

import pytest

from shared.grammar import SchemaLimits
from shared.settings import Settings, SettingsError, load_settings


def test_defaults_without_environment():
    """An empty environment gives the documented defaults."""
    settings = load_settings({})
    assert settings == Settings()
    assert settings.port == 8000 and settings.flower_port == 5555
    assert settings.retention_seconds == 3600


def test_values_are_parsed_and_typed():
    """Each variable is parsed into its field's type."""
    settings = load_settings(
        {
            "SLUICE_PORT": "9001",
            "SLUICE_REDIS_URL": "redis://h:1/2",
            "SLUICE_WORKER_CONCURRENCY": "3",
            "SLUICE_LOG_JSON": "false",
            "SLUICE_PING_INTERVAL_SECONDS": "0.5",
            "SLUICE_FLOWER_BASIC_AUTH": "a:b",
        }
    )
    assert settings.port == 9001
    assert settings.redis_url == "redis://h:1/2"
    assert settings.worker_concurrency == 3
    assert settings.log_json is False
    assert settings.ping_interval_seconds == 0.5
    assert settings.flower_basic_auth == "a:b"


def test_every_bad_variable_is_named_in_one_error():
    """One error lists all invalid variables, not just the first."""
    with pytest.raises(SettingsError) as info:
        load_settings({"SLUICE_PORT": "http", "SLUICE_RETENTION_SECONDS": "0", "SLUICE_LOG_JSON": "maybe"})
    text = str(info.value)
    assert "SLUICE_PORT" in text and "SLUICE_RETENTION_SECONDS" in text
    assert "SLUICE_LOG_JSON" in text


def test_port_range_is_checked():
    """A port outside 1-65535 is refused."""
    with pytest.raises(SettingsError, match="SLUICE_FLOWER_PORT"):
        load_settings({"SLUICE_FLOWER_PORT": "70000"})


def test_worker_metrics_port_is_off_by_default_and_checked():
    """``SLUICE_WORKER_METRICS_PORT`` 0 (or unset) means off; otherwise it must be a TCP port."""
    assert load_settings({}).worker_metrics_port == 0
    assert load_settings({"SLUICE_WORKER_METRICS_PORT": "0"}).worker_metrics_port == 0
    assert load_settings({"SLUICE_WORKER_METRICS_PORT": "9100"}).worker_metrics_port == 9100
    with pytest.raises(SettingsError, match="SLUICE_WORKER_METRICS_PORT"):
        load_settings({"SLUICE_WORKER_METRICS_PORT": "70000"})
    with pytest.raises(SettingsError, match="SLUICE_UPSTREAM_CONCURRENCY"):
        load_settings({"SLUICE_UPSTREAM_CONCURRENCY": "0"})


def test_performance_settings_are_parsed_and_checked():
    """The hub, pool and coalescing settings parse; a negative window or a zero pool is refused."""
    settings = load_settings(
        {"SLUICE_COALESCE_MS": "7.5", "SLUICE_API_REDIS_CONNECTIONS": "5", "SLUICE_HUB_MAILBOX_EVENTS": "64"}
    )
    assert (settings.coalesce_ms, settings.api_redis_connections, settings.hub_mailbox_events) == (7.5, 5, 64)
    with pytest.raises(SettingsError) as raised:
        load_settings({"SLUICE_COALESCE_MS": "-1", "SLUICE_API_REDIS_CONNECTIONS": "0"})
    assert "SLUICE_COALESCE_MS" in str(raised.value) and "SLUICE_API_REDIS_CONNECTIONS" in str(raised.value)


def test_schema_caps_are_parsed_and_checked():
    """Schema and grammar caps come from SLUICE_*; the repetition cap stays within llama.cpp's 2000."""
    settings = load_settings(
        {
            "SLUICE_SCHEMA_MAX_REPEAT": "2000",
            "SLUICE_SCHEMA_MAX_PROPERTIES": "10",
            "SLUICE_SCHEMA_MAX_NODES": "50",
            "SLUICE_SCHEMA_MAX_DEPTH": "4",
            "SLUICE_GRAMMAR_MAX_BYTES": "4096",
            "SLUICE_GRAMMAR_COMPILE_SECONDS": "0.5",
        }
    )
    limits = SchemaLimits.from_settings(settings)
    assert limits == SchemaLimits(2000, 10, 4, 50, 4096, 0.5)
    with pytest.raises(SettingsError, match="SLUICE_SCHEMA_MAX_REPEAT"):
        load_settings({"SLUICE_SCHEMA_MAX_REPEAT": "2001"})
    with pytest.raises(SettingsError, match="SLUICE_GRAMMAR_COMPILE_SECONDS"):
        load_settings({"SLUICE_GRAMMAR_COMPILE_SECONDS": "0"})
