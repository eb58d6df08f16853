"""Structured logs: JSON lines that always carry message_id and correlation_id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import bind_message, clear_message, configure_logging
from shared.settings import Settings


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    clear_message()
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)
    structlog.reset_defaults()


def _lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_stdlib_lines_carry_the_bound_message_ids(capsys, restore_root):
    """A standard-library log line inside a bound message is JSON with both ids and its extras."""
    configure_logging(Settings(log_json=True), "worker")
    bind_message("msg_1", "corr-1")
    logging.getLogger("sluice.test").info("finished", extra={"output_tokens": 3})
    (line,) = _lines(capsys.readouterr().err)
    assert line["event"] == "finished" and line["output_tokens"] == 3
    assert (line["message_id"], line["correlation_id"], line["component"]) == ("msg_1", "corr-1", "worker")


def test_lines_outside_a_message_carry_null_ids(capsys, restore_root):
    """Outside any message the keys are still there, with null values."""
    configure_logging(Settings(log_json=True), "api")
    structlog.get_logger("sluice.test").warning("starting")
    (line,) = _lines(capsys.readouterr().err)
    assert line["message_id"] is None and line["correlation_id"] is None and line["level"] == "warning"


def test_configuring_twice_installs_one_handler(capsys, restore_root):
    """A second configure call replaces the first one's handler: each line is written once."""
    configure_logging(Settings(log_json=True), "api")
    configure_logging(Settings(log_json=True), "api")
    logging.getLogger("sluice.test").warning("once")
    assert len(_lines(capsys.readouterr().err)) == 1


def test_log_level_filters_lower_lines(capsys, restore_root):
    """``SLUICE_LOG_LEVEL=WARNING`` drops info lines."""
    configure_logging(Settings(log_json=True, log_level="WARNING"), "api")
    logging.getLogger("sluice.test").info("hidden")
    assert capsys.readouterr().err == ""
