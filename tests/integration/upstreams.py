"""Fixtures for upstream tests: llama-cpp-python's OpenAI-compatible server, the faulty server.

Import the fixtures into a test module to use them (they are module- or session-scoped).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.probes import free_port, http_ok, wait_for
from deploy.stack import Stack
from tests.integration.faulty_upstream import FaultyUpstream

#: The name the llama-cpp-python server answers to (``--model_alias``).
LLAMA_ALIAS = "smollm2"
#: How llama-cpp-python's server differs from OpenAI's API (the ``options`` of its model).
LLAMA_SERVER_OPTIONS = {
    "response_format": "json_object",
    "param_names": {"repetition_penalty": "repeat_penalty"},
}


def start_llama_server(var_dir: Path) -> tuple[Stack, str]:
    """``python -m llama_cpp.server`` on the embedded GGUF, on a free port; returns its ``/v1`` URL."""
    from workers.providers.llama_cpp import default_model_path

    stack = Stack(var_dir)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        default_model_path(),
        "--model_alias",
        LLAMA_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
    ]
    process = stack.spawn(f"llama-server-{port}", argv)
    try:
        wait_for(
            lambda: process.alive() and http_ok(f"http://127.0.0.1:{port}/v1/models"), 120, "llama server"
        )
    except TimeoutError:
        tail = process.log_tail()
        stack.stop()
        raise RuntimeError(f"llama_cpp.server did not start:\n{tail}") from None
    return stack, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real third-party OpenAI-compatible server: llama-cpp-python's, on the embedded model."""
    stack, url = start_llama_server(tmp_path_factory.mktemp("llama-server"))
    yield url
    stack.stop()


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[FaultyUpstream]:
    """The misbehaving OpenAI-compatible server (see ``faulty_upstream.py``)."""
    server = FaultyUpstream().start()
    yield server
    server.stop()
