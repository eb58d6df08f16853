"""Nothing outside ``shared/streams/`` reads a stream: the runtime is the one home of every read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The source trees that talk to Redis (tests may read streams to check what was stored).
PACKAGES = ("api", "shared", "workers", "cli", "bench", "deploy")
HOME = ROOT / "shared" / "streams"
#: redis-py's stream read methods.
READ_METHODS = frozenset({"xread", "xrange", "xrevrange", "xreadgroup"})
#: A read sent as a raw command or from a Lua script.
RAW_READ = re.compile(r"""(redis\.p?call|execute_command)\(\s*['"]x(read|range|revrange|readgroup)\b""", re.I)


def stream_reads(source: str) -> list[str]:
    """The stream reads ``source`` makes, as ``<line>: <what>``."""
    found = [
        f"{node.lineno}: .{node.func.attr}()"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr.lower() in READ_METHODS
    ]
    for number, line in enumerate(source.splitlines(), 1):
        match = RAW_READ.search(line)
        if match:
            found.append(f"{number}: {match.group(0)}")
    return found


def sources() -> list[Path]:
    """Every Python module of the source trees outside the stream runtime."""
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if HOME not in path.parents and ".venv" not in path.parts
    ]


def test_no_module_outside_the_stream_runtime_reads_a_stream():
    """XREAD, XRANGE and XREVRANGE (as redis-py calls, raw commands or Lua) appear only in shared/streams/."""
    offenders = {
        str(path.relative_to(ROOT)): reads for path in sources() if (reads := stream_reads(path.read_text()))
    }
    assert offenders == {}


def test_the_runtime_itself_is_where_the_reads_are():
    """The guard looks where the reads are: the runtime's own modules make them."""
    found = [read for path in HOME.glob("*.py") for read in stream_reads(path.read_text())]
    assert any("xrange" in read for read in found) and any("xread" in read for read in found)
    assert len(sources()) > 50


@pytest.mark.parametrize(
    "source",
    [
        "client.xrange(key)",
        "pipe.xread({key: '0-0'}, block=10)",
        "self.redis.xrevrange(key, count=1)",
        "SCRIPT = \"local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\"",
        "client.execute_command('XREAD', 'STREAMS', key, '0-0')",
    ],
)
def test_the_guard_catches_every_way_of_reading(source):
    """Each way of reading a stream is reported, so the guard can fail."""
    assert stream_reads(source)


def test_the_guard_ignores_prose_and_writes():
    """Docstrings that name XREAD and stream writes are not reads."""
    assert stream_reads('"""A client that blocks in ``XREAD``."""\nclient.xadd(key, {"d": "{}"})') == []
