"""Every module of api/, shared/, workers/ and deploy/ stays under 300 lines (issue 14)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "shared", "workers", "deploy")
MAX_LINES = 300


def module_lengths() -> dict[str, int]:
    """Lines of every ``.py`` file under the packages, by path from the repository root."""
    return {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_no_module_is_over_300_lines():
    """A module over the limit is split by responsibility; the offenders are listed."""
    lengths = module_lengths()
    assert len(lengths) > 50  # the packages were found
    offenders = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert not offenders, f"modules over {MAX_LINES} lines: {offenders}"
