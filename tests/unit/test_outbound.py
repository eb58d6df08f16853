"""The outbound URL policy: http(s) only, no private targets, literal or resolved, unless allowed."""

from __future__ import annotations

import pytest

from shared.outbound import UrlRefused, check_literal, check_resolved, url_source_problems
from workers.providers.base import ProviderError
from workers.providers.openai import check_image_urls

REFUSED_LITERALS = [
    "http://127.0.0.1/x",
    "http://127.8.9.10:8080/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:9000/",
    "http://LOCALHOST./",
    "http://api.localhost/",
]


@pytest.mark.parametrize("url", REFUSED_LITERALS)
def test_private_literal_hosts_are_refused(url):
    """Loopback, link-local, private, shared, multicast, reserved, unspecified and local names are refused."""
    with pytest.raises(UrlRefused):
        check_literal(url)


@pytest.mark.parametrize("url", REFUSED_LITERALS)
def test_private_literal_hosts_pass_when_allowed(url):
    """The deployment's switch lets private targets through (scheme still checked)."""
    assert check_literal(url, allow_private=True).scheme == "http"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "//x/", "http://"]
)
def test_other_schemes_and_hostless_urls_are_refused_even_when_private_is_allowed(url):
    """Only absolute http(s) URLs with a host are targets."""
    with pytest.raises(UrlRefused):
        check_literal(url, allow_private=True)


def test_public_literal_address_passes():
    """A public address is a target."""
    assert check_resolved("https://93.184.215.14/hook") == ["93.184.215.14"]


def test_a_name_resolving_to_a_private_address_is_refused():
    """DNS answers are checked: one private address among them is enough to refuse."""
    with pytest.raises(UrlRefused, match="resolves to a private"):
        check_resolved("https://hooks.example/x", resolve=lambda host, port: ["93.184.215.14", "10.0.0.5"])


def test_a_name_resolving_to_public_addresses_passes():
    """A name whose every address is public passes, and the addresses are returned."""
    found = check_resolved("https://hooks.example:8443/x", resolve=lambda host, port: ["93.184.215.14"])
    assert found == ["93.184.215.14"]


def test_a_name_that_does_not_resolve_is_refused():
    """An unresolvable host is refused, not sent to."""

    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UrlRefused, match="does not resolve"):
        check_resolved("https://nowhere.example/", resolve=fail)


def test_url_sources_in_a_body_are_located():
    """Each refused image url source is reported at its field path."""
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/"}},
                    {"type": "image", "source": {"type": "url", "url": "https://93.184.215.14/cat.png"}},
                ],
            },
        ]
    }
    problems = url_source_problems(body)
    assert [p["loc"] for p in problems] == [["messages", 1, "content", 1, "source", "url"]]
    assert url_source_problems(body, allow_private=True) == []


def test_the_openai_provider_refuses_an_image_url_resolving_to_loopback():
    """Before passing an image URL upstream, the worker re-checks the resolved address."""
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://localhost/x.png"}}],
            }
        ]
    }
    with pytest.raises(ProviderError, match="outbound URL policy"):
        check_image_urls(body)
    check_image_urls(body, allow_private=True)
    check_image_urls(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
                }
            ]
        }
    )
