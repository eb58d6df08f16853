"""Outbound URLs a tenant sends are refused when they point inside (real API process and Redis)."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.helpers import chat, post
from tests.security.conftest import KEY_A, auth

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSIDE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:6379/",
    "http://localhost/admin",
    "http://10.0.0.7/image.png",
    "http://[::1]/x.png",
    "file:///etc/passwd",
]


def image(url: str) -> dict[str, object]:
    """A body whose user turn carries an image by URL."""
    content = [{"type": "image", "source": {"type": "url", "url": url}}, {"type": "text", "text": "what?"}]
    return chat(messages=[{"role": "user", "content": content}])


@pytest.mark.parametrize("url", INSIDE)
def test_image_urls_pointing_inside_are_refused_before_anything_is_stored(make_stack, url):
    """An image url on loopback, link-local (cloud metadata), private space or not http(s) is a 400
    at its exact path, and nothing is stored or queued."""
    stack = make_stack()
    api = stack.start_api()
    refused = post(api, image(url), auth(KEY_A))
    assert refused.status_code == 400, refused.text
    locs = [d["loc"] for d in refused.json()["detail"]]
    assert ["messages", 0, "content", 0, "source", "url"] in locs
    assert not list(stack.redis.scan_iter("sluice:msg:*"))


def test_webhook_endpoints_pointing_inside_are_refused(make_stack):
    """A webhook endpoint on a private address is refused at registration (400)."""
    stack = make_stack()
    api = stack.start_api()
    answer = httpx.post(
        f"{api}/v1/webhook_endpoints",
        json={"url": "http://169.254.169.254/hook"},
        headers=auth(KEY_A),
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    listed = httpx.get(f"{api}/v1/webhook_endpoints", headers=auth(KEY_A), timeout=10).json()
    assert listed["data"] == []
