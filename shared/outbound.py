"""The outbound URL policy: where Sluice may send a request on a tenant's behalf.

Webhook deliveries and image ``url`` sources passed to OpenAI-compatible upstreams go to
addresses a tenant chose, from inside the deployment's network. Only ``http``/``https`` is
allowed, and loopback, link-local (cloud metadata at 169.254.169.254), private, shared
(CGNAT), multicast, unspecified and reserved addresses are refused, both for literal IP
hosts (at validation) and for every address a host name resolves to (before sending),
unless the deployment allows private targets (``SLUICE_WEBHOOK_ALLOW_PRIVATE``,
``SLUICE_UPSTREAM_ALLOW_PRIVATE_URLS``).

Exceptions::

    UrlRefused(ValueError)    the URL may not be used; ``str()`` says why
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})
#: Host names that always mean this machine, whatever DNS says.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class UrlRefused(ValueError):
    """The URL may not be used as an outbound target."""


@dataclass(frozen=True)
class Target:
    """A URL split into what the policy looks at."""

    scheme: str
    host: str
    port: int


def refusal(address: IpAddress) -> str | None:
    """Why ``address`` is not a public target (None: it is)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("shared (CGNAT)", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
        ("non-global", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address {address}"
    return None


_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


def parse_target(url: str) -> Target:
    """Scheme, host and port of ``url``; ``UrlRefused`` unless it is an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UrlRefused(f"scheme {parts.scheme or '(none)'!r} is not allowed; use http or https")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlRefused("the URL has no host")
    return Target(scheme, host, port or (443 if scheme == "https" else 80))


def literal_address(host: str) -> IpAddress | None:
    """``host`` as an IP address when it is one (None for a name)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_literal(url: str, *, allow_private: bool = False) -> Target:
    """The checks that need no DNS: scheme, host present, and a literal IP or local name that is
    not private. Cheap enough for request validation."""
    target = parse_target(url)
    if allow_private:
        return target
    if target.host in LOCAL_NAMES or target.host.endswith(".localhost"):
        raise UrlRefused(f"host {target.host!r} is this machine")
    address = literal_address(target.host)
    reason = refusal(address) if address is not None else None
    if reason:
        raise UrlRefused(f"{reason} is not allowed")
    return target


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_resolved(
    url: str, *, allow_private: bool = False, resolve: Resolver = system_resolver
) -> list[str]:
    """``check_literal``, then resolve the host and refuse when any of its addresses is not public
    (one private answer is enough for a rebinding attack). Returns the addresses."""
    target = check_literal(url, allow_private=allow_private)
    literal = literal_address(target.host)
    if literal is not None:
        return [str(literal)]
    try:
        addresses = resolve(target.host, target.port)
    except OSError as exc:
        raise UrlRefused(f"host {target.host!r} does not resolve: {exc}") from None
    if not addresses:
        raise UrlRefused(f"host {target.host!r} does not resolve")
    if not allow_private:
        for raw in addresses:
            reason = refusal(ipaddress.ip_address(raw.split("%", 1)[0]))
            if reason:
                raise UrlRefused(f"host {target.host!r} resolves to a {reason}, which is not allowed")
    return addresses


def url_source_problems(body: dict[str, Any], *, allow_private: bool = False) -> list[dict[str, Any]]:
    """``[{loc, msg, type}]`` for every image or document ``url`` source of a validated ChatBody
    that the policy refuses without DNS (a literal private IP, ``localhost``)."""
    problems: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            source = block.get("source") if isinstance(block, dict) else None
            if not isinstance(source, dict) or source.get("type") != "url":
                continue
            try:
                check_literal(str(source.get("url", "")), allow_private=allow_private)
            except UrlRefused as exc:
                loc = ["messages", i, "content", j, "source", "url"]
                problems.append({"loc": loc, "msg": f"URL refused: {exc}", "type": "value_error"})
    return problems
