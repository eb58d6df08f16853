"""``make bench``: run the suite on loopback stacks, write ``bench/results/*.json``, the table and plots.

Environment: ``SLUICE_BENCH_QUICK=1`` for a short run; ``SLUICE_BENCH_REPEATS=N`` to change
the repeats; ``SLUICE_BENCH_ONLY=model,submit,...`` to run some benchmarks only.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback

from bench.common import RESULTS, Options, log
from bench.report import ORDER, write_report


def main() -> int:
    """Run the selected benchmarks one after the other; one failing does not stop the others."""
    options = Options.from_env()
    only = [name.strip() for name in os.environ.get("SLUICE_BENCH_ONLY", "").split(",") if name.strip()]
    names = only or list(ORDER)
    unknown = set(names) - set(ORDER)
    if unknown:
        print(f"unknown benchmarks {sorted(unknown)}; choose from {list(ORDER)}", file=sys.stderr)
        return 2
    log(f"{'quick' if options.quick else 'full'} run, {options.repeats} repeats: {', '.join(names)}")
    failed = []
    started = time.monotonic()
    for name in names:
        began = time.monotonic()
        try:
            importlib.import_module(f"bench.{name}").run(options)
        except Exception:
            failed.append(name)
            traceback.print_exc()
        log(f"{name}: {time.monotonic() - began:.0f} s")
    report = write_report(RESULTS)
    log(f"done in {time.monotonic() - started:.0f} s; table in {report}")
    print(report.read_text())
    if failed:
        log(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
