"""``make run``: start redis-server (unless ``SLUICE_REDIS_URL`` is set), a Celery worker with
the embedded model, the API under gunicorn and Flower; wait for readiness; stop all on a signal."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from deploy.stack import ROOT, Stack, free_port, port_open
from shared.settings import SettingsError, load_settings


def main() -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    var_dir = Path(os.environ.get("SLUICE_VAR_DIR", ROOT / "var"))
    stack = Stack(var_dir / "logs", env={k: v for k, v in os.environ.items() if k.startswith("SLUICE_")})
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if "SLUICE_REDIS_URL" not in os.environ:
            url = stack.start_redis(free_port() if port_open(6379) else 6379)
            print(f"redis:   {url} (data in {var_dir / 'logs' / 'redis'})")
        stack.start_worker("local", concurrency=settings.worker_concurrency)
        api = stack.start_api(settings.port, env={"SLUICE_HOST": settings.host})
        flower = stack.start_flower(settings.flower_port, settings.flower_basic_auth)
        print(f"api:     {api}    (logs in {stack.var_dir})")
        print(f"flower:  {flower}")
        stack.wait_ready(api)
        print("ready", flush=True)
        while not stop.wait(1.0):
            dead = [p.name for p in stack.processes if not p.alive()]
            if dead:
                print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
                return 1
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping every process", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
