"""A real stack for the hostile-tenant tests: redis-server, a Celery worker, gunicorn, two keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import Fault, stacks

KEY_A, KEY_B, OPERATOR = "key-a-0123456789", "key-b-0123456789", "key-op-0123456789"


def auth(key: str) -> dict[str, str]:
    """The headers of a request made with ``key``."""
    return {"x-api-key": key}


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Fault]]:
    """A fresh stack per test with keys A and B and an operator key (the test starts workers and APIs)."""
    yield from stacks(tmp_path, {"SLUICE_API_KEYS": f"{KEY_A},{KEY_B}", "SLUICE_OPERATOR_API_KEYS": OPERATOR})
