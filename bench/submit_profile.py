"""In-process cost of one submit: a Flask test client posting ``/v1/messages/async`` to a real Redis.

``python -m bench.submit_profile [N] [--profile]`` prints µs per submit (median of 5 rounds of N);
with ``--profile`` it prints a pyinstrument profile of one round instead.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from api.app import create_app
from bench.common import MODELS_TOML
from bench.submit import BODY
from deploy.stack import Stack
from shared.settings import Settings


def _round(client, n: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(n):
        response = client.post("/v1/messages/async", json=BODY)
        assert response.status_code == 200, response.get_data(as_text=True)
    return (time.perf_counter() - started) / n * 1e6


def _round_health(client, n: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(n):
        client.get("/health")
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    """Measure (or profile) the submit path in this process."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 2000
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            url = stack.start_redis(persistent=False)
            models = Path(tmp) / "models.toml"
            models.write_text(MODELS_TOML)
            settings = Settings(redis_url=url, models_file=str(models), log_json=False, log_level="WARNING")
            client = create_app(settings).test_client()
            _round(client, 200)  # warm-up: connections, Lua script cache, imports
            if "--profile" in sys.argv:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0002)
                profiler.start()
                _round(client, n)
                profiler.stop()
                print(profiler.output_text(unicode=True, color=False, show_all="--all" in sys.argv))
                return
            rounds = [_round(client, n) for _ in range(5)]
            health = [_round_health(client, n) for _ in range(5)]
            print(f"GET /health in-process (the test client's own cost): {statistics.median(health):.0f} µs")
            stats = redis.Redis.from_url(url).info("commandstats").get("cmdstat_evalsha", {})
            print(f"Redis time per create script: {stats.get('usec_per_call', 0):.0f} µs")
            print(
                f"submit in-process: median {statistics.median(rounds):.0f} µs "
                f"(min {min(rounds):.0f}, max {max(rounds):.0f}) over 5 rounds of {n}"
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
