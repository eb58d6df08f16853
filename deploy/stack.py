"""Starts and stops the real processes of a Sluice stack: redis-server, Celery workers,
gunicorn, Flower. Used by ``make run`` (``deploy/run.py``), the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.probes import free_port, http_ok, port_open, wait_for
from shared.settings import DeploySettings, env_name

ROOT = Path(__file__).resolve().parent.parent
#: The Celery command line of this project's app, for workers and Flower.
CELERY = (sys.executable, "-m", "celery", "-A", "workers.main")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies, even by SIGKILL, so a
    killed ``make run`` or test run leaves no orphan (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):  # not Linux: the launcher's own cleanup still applies
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class Process:
    """A started process, in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Stack:
    """A set of processes sharing one environment and one folder for logs and data."""

    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        base.update(self.env)
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        base.setdefault("PYTHONUNBUFFERED", "1")
        self.env = base

    def deploy_setting(self, name: str) -> Any:
        """One ``DeploySettings`` field from this stack's environment (checked; its default if unset)."""
        key = env_name(name)
        return getattr(DeploySettings.from_env({key: self.env[key]} if key in self.env else {}), name)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Process:
        """Start ``argv`` in its own session, output to ``var_dir/<name>.log``."""
        log_path = self.var_dir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_redis(
        self, port: int | None = None, *, persistent: bool = True, password: str | None = None
    ) -> str:
        """A redis-server on loopback; returns its URL and sets ``SLUICE_REDIS_URL``.

        With ``password``, Redis requires it; it goes into a private config file, never the command line.
        """
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        port = port or free_port()
        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if password:
            path = self.var_dir / f"redis-{port}.conf"
            path.touch(mode=0o600)
            path.write_text(f"requirepass {password}\n")
            config = [str(path)]
        argv = [
            server,
            *config,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            # A memory cap that fails writes instead of evicting: Celery's queue lists, statuses
            # and streams share this Redis, and any eviction could drop accepted work silently.
            "--maxmemory",
            self.deploy_setting("redis_maxmemory"),
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "yes" if persistent else "no",
            "--appendfsync",
            "everysec",
        ]
        process = self.spawn(f"redis-{port}", argv)
        self._wait(process, lambda: port_open(port), 20, "redis-server")
        url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
        self.env["SLUICE_REDIS_URL"] = url
        return url

    def start_worker(
        self,
        hostname: str = "worker1",
        *,
        queues: str = "sluice.local",
        concurrency: int | None = None,
        pool: str = "prefork",
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> Process:
        """A real Celery worker consuming ``queues``; with ``metrics_port``, serving its metrics there."""
        conc = concurrency or self.deploy_setting("worker_concurrency")
        extra = dict(env or {})
        if metrics_port:
            extra["SLUICE_WORKER_METRICS_PORT"] = str(metrics_port)
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir(f"worker-{hostname}"))
        argv = [
            *CELERY,
            "worker",
            "--hostname",
            f"{hostname}@%h",
            "--queues",
            queues,
            "--pool",
            pool,
            "--concurrency",
            str(conc),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "-E",
        ]
        return self.spawn(f"worker-{hostname}", argv, extra)

    def metrics_dir(self, name: str) -> Path:
        """An empty folder for one process tree's Prometheus multiprocess files."""
        folder = self.var_dir / "prometheus" / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def start_api(self, port: int | None = None, env: Mapping[str, str] | None = None) -> str:
        """gunicorn (gevent workers) serving the API; returns its base URL."""
        port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "api" / "gunicorn_conf.py"),
            "api.wsgi:app",
        ]
        extra = {
            "SLUICE_PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir(f"api-{port}")),
            **(env or {}),
        }
        process = self.spawn(f"api-{port}", argv, extra)
        self._wait(process, lambda: http_ok(f"http://127.0.0.1:{port}/health"), 30, "the API")
        return f"http://127.0.0.1:{port}"

    def start_flower(self, port: int, basic_auth: str | None = None) -> str:
        """Flower on ``port`` (task events come from the workers' ``-E``); ``basic_auth``
        ("user:password") reaches it through ``FLOWER_BASIC_AUTH``, never the command line."""
        argv = [
            *CELERY,
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ]
        env = {"FLOWER_BASIC_AUTH": basic_auth} if basic_auth else {}
        process = self.spawn(f"flower-{port}", argv, env)
        self._wait(process, lambda: port_open(port), 30, "Flower")
        return f"http://127.0.0.1:{port}"

    def wait_ready(self, base_url: str, timeout: float = 120) -> None:
        """Until ``/ready`` says a worker consumes."""
        wait_for(lambda: http_ok(f"{base_url}/ready"), timeout, f"{base_url}/ready")

    def _wait(self, process: Process, predicate, timeout: float, what: str) -> None:
        def up() -> bool:
            if not process.alive():
                raise RuntimeError(f"{what} exited:\n{process.log_tail()}")
            return bool(predicate())

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if up():
                    return
            except RuntimeError:
                raise
            except Exception:  # not up yet
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{what} did not come up in {timeout}s:\n{process.log_tail()}")

    def stop(self) -> None:
        """Stop every process, newest first."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
