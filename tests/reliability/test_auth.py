"""API keys: both header forms, 401 otherwise, tenants see only their own messages, keys never logged."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.helpers import chat, post

pytestmark = pytest.mark.integration

KEYS = "alpha-secret-1,beta-secret-2"
ALPHA = {"Authorization": "Bearer alpha-secret-1"}
BETA = {"x-api-key": "beta-secret-2"}


@pytest.fixture
def secured(make_stack, tmp_path):
    """An API with two keys (one from the variable, one from a keys file)."""
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# one key a line\nbeta-secret-2\n")
    stack = make_stack(SLUICE_API_KEYS="alpha-secret-1", SLUICE_API_KEYS_FILE=str(keys_file))
    return stack, stack.start_api()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"x-api-key": "wrong"}, 401),
        ({"Authorization": "Basic alpha-secret-1"}, 401),
        ({"Authorization": "Bearer alpha-secret-1"}, 200),
        ({"x-api-key": "alpha-secret-1"}, 200),
        ({"Authorization": "Bearer beta-secret-2"}, 200),
        ({"x-api-key": "beta-secret-2"}, 200),
    ],
)
def test_submit_needs_a_valid_key_in_either_header(secured, headers, expected):
    """Only a configured key, as Bearer or x-api-key, may submit; anything else is 401."""
    _, api = secured
    response = post(api, chat(), headers)
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", "status"), ("GET", "stream"), ("POST", "cancel"), ("DELETE", "delete"), ("DELETE", "")],
)
def test_another_key_gets_404_for_every_operation(secured, method, suffix):
    """A message is invisible to other keys: status, stream, cancel and delete answer 404."""
    _stack, api = secured
    message_id = post(api, chat(), ALPHA).json()["message_id"]
    url = f"{api}/v1/messages/async/{message_id}" + (f"/{suffix}" if suffix else "")
    other = httpx.request(method, url, headers=BETA, timeout=10)
    assert other.status_code == 404
    assert other.json()["error"]["type"] == "not_found_error"
    assert (
        httpx.get(f"{api}/v1/messages/async/{message_id}/status", headers=ALPHA, timeout=10).status_code
        == 200
    )
    if method != "GET":
        owner = httpx.request(method, url, headers=ALPHA, timeout=10)
        assert owner.status_code == 200


def test_health_is_open_and_ready_is_open_by_default(secured):
    """/health and /ready need no key unless the ops endpoints are protected."""
    _, api = secured
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    assert httpx.get(f"{api}/ready", timeout=10).status_code in (200, 503)


def test_observer_page_loads_without_a_key(secured):
    """The page and its files are public: it asks for the key and sends it on API calls."""
    _, api = secured
    page = httpx.get(f"{api}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(f"{api}/ui/app.js", timeout=10).status_code == 200
    assert httpx.get(f"{api}/v1/messages/async/x/status", timeout=10).status_code == 401


def test_ops_endpoints_can_be_protected(make_stack):
    """With SLUICE_PROTECT_OPS_ENDPOINTS, /ready needs a key; /health stays open."""
    stack = make_stack(SLUICE_API_KEYS=KEYS, SLUICE_PROTECT_OPS_ENDPOINTS="true")
    api = stack.start_api()
    assert httpx.get(f"{api}/ready", timeout=10).status_code == 401
    assert httpx.get(f"{api}/ready", headers=ALPHA, timeout=10).status_code in (200, 503)
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200


def test_keys_are_stored_hashed_and_never_logged(secured):
    """Neither Redis nor the API's log holds a key in clear text."""
    stack, api = secured
    post(api, chat(), ALPHA)
    post(api, chat(), {"x-api-key": "not-a-key-9"})
    for key in stack.redis.scan_iter("*"):
        assert "secret" not in key
        if stack.redis.type(key) == "hash":
            assert not any("secret" in v for v in stack.redis.hgetall(key).values())
    logs = "".join(p.log_path.read_text(errors="replace") for p in stack.stack.processes)
    assert "alpha-secret-1" not in logs and "not-a-key-9" not in logs
