"""Submit cost against the framework floor, and gunicorn+gevent against granian for the submit path.

Four servers on one Redis, one process each: Sluice's API and a bare Flask view
(``bench/floor_app.py``: parse the JSON, one Redis ``SET``), each under gunicorn with a gevent
worker (the production setup) and under granian (Rust HTTP server, WSGI interface). Every
repeat offers each of them, in a rotating order, the same open-loop load (500 submits/s over
50 keep-alive connections, request *k* due at *t0 + k/rate*, latency from the due time) and
reads the CPU time the server's processes used (``/proc``), so CPU per submit and its ratio
to the floor come from the same repeat.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Metric, Options, bench_stack, log, percentile, write_result
from bench.submit import _open
from deploy.probes import free_port, http_ok, port_open, wait_for
from deploy.stack import ROOT

RATE = 500
TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found = [pid]
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        found += _tree(int(child))
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s process tree so far."""
    total = 0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _servers(st: object) -> dict[str, tuple[str, int]]:
    """Start the four servers; name → (base URL, pid)."""
    stack = st.stack  # type: ignore[attr-defined]
    found: dict[str, tuple[str, int]] = {}
    for name, module in (("Sluice", "api.wsgi:app"), ("floor", "bench.floor_app:app")):
        port = free_port()
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "api" / "gunicorn_conf.py"), module]
        process = stack.spawn(
            f"gunicorn-{name}", gunicorn, {"SLUICE_PORT": str(port), "SLUICE_API_WORKERS": "1"}
        )
        found[f"{name}, gunicorn+gevent"] = (f"http://127.0.0.1:{port}", process.popen.pid)
        port = free_port()
        granian = [
            sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--no-ws", module,
        ]  # fmt: skip
        process = stack.spawn(f"granian-{name}", granian)
        found[f"{name}, granian"] = (f"http://127.0.0.1:{port}", process.popen.pid)
    for base, _ in found.values():
        port = int(base.rsplit(":", 1)[1])
        wait_for(lambda port=port: port_open(port), 60, base)
    wait_for(lambda: http_ok(found["Sluice, gunicorn+gevent"][0] + "/health"), 60, "Sluice")
    return found


def run(options: Options) -> list[Metric]:
    """CPU per submit ÷ floor, and latency at 500/s, for each server, within each repeat."""
    seconds = options.pick(3.0, 8.0)
    names = ["Sluice, gunicorn+gevent", "floor, gunicorn+gevent", "Sluice, granian", "floor, granian"]
    cpu = {n: Metric(f"submit CPU per request, {n}", "µs") for n in names}
    p50 = {n: Metric(f"submit p50 at {RATE}/s offered (open loop), {n}", "ms") for n in names}
    p99 = {n: Metric(f"submit p99 at {RATE}/s offered (open loop), {n}", "ms") for n in names}
    p50["Sluice, gunicorn+gevent"].target, p50["Sluice, gunicorn+gevent"].check = "≤ 3 ms", lambda v: v <= 3
    p99["Sluice, gunicorn+gevent"].target, p99["Sluice, gunicorn+gevent"].check = "≤ 15 ms", lambda v: v <= 15
    ratio = Metric(
        "submit CPU per request ÷ bare-Flask floor (gunicorn+gevent)", "ratio", "≤ 1.3", lambda v: v <= 1.3
    )
    ratio_granian = Metric("submit CPU per request ÷ bare-Flask floor (granian)", "ratio")
    ratio_servers = Metric("Sluice submit CPU per request, granian ÷ gunicorn+gevent", "ratio")
    metrics = [ratio, ratio_granian, ratio_servers, *cpu.values(), *p50.values(), *p99.values()]
    with bench_stack("floor", api=False) as st:
        servers = _servers(st)
        for base, _ in servers.values():
            asyncio.run(_open(base, RATE, 1.0))  # warm-up: connections, imports, the Lua cache
        for repeat in range(options.repeats):
            order = names[repeat % 4 :] + names[: repeat % 4]
            per: dict[str, float] = {}
            for name in order:
                base, pid = servers[name]
                st.redis.flushdb()
                before = _cpu_seconds(pid)
                result = asyncio.run(_open(base, RATE, seconds))
                per[name] = (_cpu_seconds(pid) - before) / len(result.latencies) * 1e6
                cpu[name].add(per[name])
                p50[name].add(percentile(result.latencies, 50) * 1000)
                p99[name].add(percentile(result.latencies, 99) * 1000)
                if result.failures:
                    log(f"floor: {name}: {result.failures} failed")
            ratio.add(per["Sluice, gunicorn+gevent"] / per["floor, gunicorn+gevent"])
            ratio_granian.add(per["Sluice, granian"] / per["floor, granian"])
            ratio_servers.add(per["Sluice, granian"] / per["Sluice, gunicorn+gevent"])
            log(f"floor: repeat {repeat + 1}: " + ", ".join(f"{k} {v:.0f} µs" for k, v in per.items()))
    write_result("floor", options, metrics, {"offered_per_second": RATE, "seconds": seconds})
    return metrics
