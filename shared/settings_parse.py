"""The value types of ``SLUICE_*`` variables: each an annotated type whose checks pydantic runs,
with the parsers of the few values pydantic does not read by itself (lists, empty means unset)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

#: The most repetitions llama.cpp's grammar parser accepts.
LLAMA_MAX_REPEAT = 2000


def parse_bool(raw: Any) -> Any:
    """``1/true/yes/on`` and ``0/false/no/off`` (any case); anything else is refused."""
    if not isinstance(raw, str):
        return raw
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def parse_optional_str(raw: Any) -> Any:
    """An empty value means unset."""
    return raw or None


def parse_upper(raw: Any) -> Any:
    """Log levels in any case."""
    return raw.upper() if isinstance(raw, str) else raw


def parse_name(raw: Any) -> Any:
    """A name that must not be blank (surrounding spaces dropped)."""
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def parse_off_port(raw: Any) -> Any:
    """An empty value is 0 (off)."""
    return 0 if isinstance(raw, str) and not raw.strip() else raw


def parse_schedule(raw: Any) -> Any:
    """Comma-separated seconds (``5,300,1800``) as a tuple."""
    if not isinstance(raw, str):
        return raw
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        values = ()
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


def parse_address_list(raw: Any) -> Any:
    """``host:port,...`` normalised (no spaces); empty means unset."""
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        return None
    return ",".join(f"{host}:{port}" for host, port in parse_addresses(raw))


Bool = Annotated[bool, BeforeValidator(parse_bool)]
OptionalStr = Annotated[str | None, BeforeValidator(parse_optional_str)]
Port = Annotated[int, Field(ge=1, le=65535)]
#: A TCP port, or 0 (or empty) for "not served".
OptionalPort = Annotated[int, Field(ge=0, le=65535), BeforeValidator(parse_off_port)]
PositiveInt = Annotated[int, Field(ge=1)]
#: 0 usually means "off".
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Repetition counts a grammar may hold (llama.cpp refuses more than 2000).
Repeat = Annotated[int, Field(ge=1, le=LLAMA_MAX_REPEAT)]
Name = Annotated[str, BeforeValidator(parse_name)]
LogLevel = Annotated[str, BeforeValidator(parse_upper)]
AddressList = Annotated[str | None, BeforeValidator(parse_address_list)]
#: Not JSON (pydantic-settings' default for a tuple) but ``5,300,1800``.
Schedule = Annotated[tuple[int, ...], NoDecode, BeforeValidator(parse_schedule)]
