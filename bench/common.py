"""What every benchmark shares: the run's options, statistics, stacks on loopback, and results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from deploy.stack import ROOT, Stack

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
VAR = ROOT / "var" / "bench"

#: Coalescing windows the model benchmark measures side by side with the default (ms).
WINDOWS_MS = (0, 10, 25, 50)

#: The models the benchmarks serve, each on its own queue (``io`` has a per-token delay;
#: ``default-c<w>`` is the embedded model on a worker with a ``<w>`` ms coalescing window).
MODELS_TOML = """
[models.scripted]
provider = "scripted"
queue = "sluice.bench"
max_output_tokens = 100000
options = { tokens_per_second = 0 }

[models.scripted-1k]
provider = "scripted"
queue = "sluice.bench"
options = { tokens_per_second = 1000 }

[models.io]
provider = "scripted"
queue = "sluice.bench.io"
options = { tokens_per_second = 50 }

[models.default]
provider = "llama_cpp"
queue = "sluice.local"
""" + "".join(
    f'\n[models.default-c{w}]\nprovider = "llama_cpp"\nqueue = "sluice.local.c{w}"\n' for w in WINDOWS_MS
)


@dataclass(frozen=True)
class Options:
    """How big a run is: ``SLUICE_BENCH_QUICK=1`` for a short one that proves the suite works."""

    quick: bool
    repeats: int

    @classmethod
    def from_env(cls) -> Options:
        quick = os.environ.get("SLUICE_BENCH_QUICK", "0") not in ("", "0", "false")
        default = 3 if quick else 5
        return cls(quick=quick, repeats=int(os.environ.get("SLUICE_BENCH_REPEATS", default)))

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in a quick run, ``full`` otherwise."""
        return quick if self.quick else full


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Metric:
    """One figure: a value per repeated run, summarised as median with min and max."""

    name: str
    unit: str
    target: str = ""
    #: Given the median, whether the target is met (None: report only).
    check: Callable[[float], bool] | None = None
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def summary(self) -> dict[str, Any]:
        median = statistics.median(self.values) if self.values else float("nan")
        return {
            "name": self.name,
            "unit": self.unit,
            "median": median,
            "min": min(self.values) if self.values else float("nan"),
            "max": max(self.values) if self.values else float("nan"),
            "runs": self.values,
            "target": self.target,
            "met": None if self.check is None or not self.values else bool(self.check(median)),
        }


def machine() -> dict[str, Any]:
    """The machine a run happened on."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    load = os.getloadavg()
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "redis": redis_version.split()[2] if redis_version else "?",
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def write_result(
    name: str, options: Options, metrics: list[Metric], extra: dict[str, Any] | None = None
) -> Path:
    """``bench/results/<name>.json`` with every metric and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "quick": options.quick,
        "repeats": options.repeats,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "metrics": [m.summary() for m in metrics],
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


@dataclass
class BenchStack:
    """A stack on loopback for one benchmark: Redis, API, workers, and a Redis client."""

    stack: Stack
    api: str
    redis: redis.Redis

    def stop(self) -> None:
        self.redis.close()
        self.stack.stop()


@contextmanager
def bench_stack(
    name: str,
    *,
    workers: Sequence[dict[str, Any]] = (),
    env: dict[str, str] | None = None,
    api: bool = True,
    wait_ready: bool = True,
) -> Iterator[BenchStack]:
    """redis-server + the given Celery workers + gunicorn (one API process) serving ``MODELS_TOML``."""
    var = VAR / f"{name}-{os.getpid()}"
    var.mkdir(parents=True, exist_ok=True)
    models = var / "models.toml"
    models.write_text(MODELS_TOML)
    base_env = {
        "SLUICE_MODELS_FILE": str(models),
        "SLUICE_LOG_JSON": "false",
        "SLUICE_LOG_LEVEL": "WARNING",
        "SLUICE_API_WORKERS": "1",
        "SLUICE_RETENTION_SECONDS": "600",
        **(env or {}),
    }
    stack = Stack(var, env=base_env)
    try:
        url = stack.start_redis(persistent=False)
        for spec in workers:
            stack.start_worker(**spec)
        base = stack.start_api() if api else ""
        if api and workers and wait_ready:
            stack.wait_ready(base, timeout=180)
        client = redis.Redis.from_url(url, decode_responses=True)
        running = BenchStack(stack, base, client)
    except Exception:
        stack.stop()
        raise
    try:
        yield running
    finally:
        running.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll ``predicate`` until true; raise naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def log(message: str) -> None:
    """One progress line on stderr-like stdout, flushed."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
