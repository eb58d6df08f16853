"""Refuse to serve an open API on a public address: keys, a loopback bind, or an explicit opt-in."""

from __future__ import annotations

import ipaddress

from api.auth import key_digests
from shared.settings import ApiSettings, env_name

#: Host names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def open_api_refusal(settings: ApiSettings) -> str | None:
    """Why the API must not start with ``settings`` (public bind, no keys, no opt-in), else None."""
    if settings.allow_open_api or is_loopback(settings.host):
        return None
    try:
        if key_digests(settings):
            return None
    except OSError as exc:
        return f"{env_name('api_keys_file')}={settings.api_keys_file} cannot be read: {exc.strerror}"
    return (
        f"refusing to serve the API on {env_name('host')}={settings.host} without API keys: anyone who "
        f"reaches that address could submit work and read every message. Set {env_name('api_keys')} "
        f"or {env_name('api_keys_file')}, bind {env_name('host')} to a loopback address (127.0.0.1), "
        f"or set {env_name('allow_open_api')}=true to serve without keys on purpose."
    )
