"""Parsers of ``SLUICE_*`` values: each takes the raw string and returns the value or raises
``ValueError`` with what was expected."""

from __future__ import annotations


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError(f"must be a TCP port (1-65535), got {value}")
    return value


def parse_positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def parse_non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be >= 0 (0 = off), got {value}")
    return value


def parse_repeat(raw: str) -> int:
    value = parse_positive_int(raw)
    if value > 2000:  # llama.cpp's grammar parser refuses counts above 2000
        raise ValueError(f"must be <= 2000 (llama.cpp's own limit), got {value}")
    return value


def parse_optional_str(raw: str) -> str | None:
    return raw or None


def parse_schedule(raw: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in raw.split(",") if part.strip())
    if not values or min(values) < 0:
        raise ValueError(f"expected comma-separated seconds >= 0, got {raw!r}")
    return values


def parse_addresses(raw: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs; raise ``ValueError`` naming a bad one."""
    found: list[tuple[str, int]] = []
    for item in raw.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port[,host:port...], got {item.strip()!r}")
        found.append((host, int(port)))
    return found


def parse_address_list(raw: str) -> str | None:
    if not raw.strip():
        return None
    return ",".join(f"{host}:{port}" for host, port in parse_addresses(raw))


def parse_name(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()
