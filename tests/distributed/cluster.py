"""A Sluice deployment spread over network-namespace hosts: Redis, workers and APIs on their own
addresses, and a client host from which the tests submit and observe."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from deploy.probes import wait_for
from deploy.stack import Process, Stack
from shared.keys import WORKERS, message_keys
from tests.distributed.netns import Host, Network
from tests.integration.helpers import TERMINAL
from tests.sse import Frame, parse_lines

REDIS_PORT = 6379
RELAY_PORT = 6380
API_PORT = 8000

#: The scripted models: ``default`` slow enough to be cut mid-way, ``fast`` as fast as it can.
MODELS_TOML = """
[models.default]
provider = "scripted"
[models.default.options]
tokens_per_second = 25
text = "one two three four five six seven eight nine ten eleven twelve "

[models.fast]
provider = "scripted"
max_output_tokens = 100000
[models.fast.options]
text = "alpha beta gamma delta "
"""


@dataclass
class Deployment:
    """Processes on the hosts of ``net``; each host has a ``Stack`` whose children live in it
    (a process started from a thread inside a namespace stays in that namespace)."""

    net: Network
    root: Path
    env: dict[str, str]
    stacks: dict[str, Stack] = field(default_factory=dict)
    apis: dict[str, str] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return self.net.hosts.get(name) or self.net.add_host(name)

    def stack(self, host: Host) -> Stack:
        if host.name not in self.stacks:
            self.stacks[host.name] = Stack(self.root / host.name, env=dict(self.env))
        return self.stacks[host.name]

    def start_redis(self, name: str = "redis", *, relay_delay_ms: float | None = None) -> str:
        """redis-server on ``name``'s address (and a delaying relay in front of it when asked);
        returns the URL workers and APIs use."""
        host = self.host(name)
        stack = self.stack(host)
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [
            server, "--port", str(REDIS_PORT), "--bind", f"{host.address} 127.0.0.1",
            "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(stack.var_dir),
        ]  # fmt: skip
        self.net.run_in(host, stack.spawn, "redis", argv)
        self.net.run_in(host, wait_for, lambda: _port_open("127.0.0.1", REDIS_PORT), 20, "redis-server")
        port = REDIS_PORT
        if relay_delay_ms is not None:
            relay = [sys.executable, "-m", "tests.distributed.relay"]
            relay += [f"{host.address}:{RELAY_PORT}", f"127.0.0.1:{REDIS_PORT}", str(relay_delay_ms)]
            self.net.run_in(host, stack.spawn, "relay", relay)
            self.net.run_in(host, wait_for, lambda: _port_open(host.address, RELAY_PORT), 20, "the relay")
            port = RELAY_PORT
        return f"redis://{host.address}:{port}/0"

    def start_worker(self, name: str, redis_url: str, *, on: str | None = None) -> Process:
        """One prefork Celery worker (concurrency 1) called ``name``, on host ``on`` (or ``name``)."""
        host = self.host(on or name)
        stack = self.stack(host)
        env = {"SLUICE_REDIS_URL": redis_url}
        return self.net.run_in(host, stack.start_worker, name, concurrency=1, env=env)

    def start_api(self, name: str, redis_url: str) -> str:
        """gunicorn on host ``name``, listening on its address; returns the URL."""
        host = self.host(name)
        stack = self.stack(host)
        # Open on purpose: the API listens only inside the test's own network namespaces.
        env = {"SLUICE_REDIS_URL": redis_url, "SLUICE_HOST": "0.0.0.0", "SLUICE_ALLOW_OPEN_API": "true"}
        self.net.run_in(host, stack.start_api, API_PORT, env)
        url = f"http://{host.address}:{API_PORT}"
        self.apis[name] = url
        return url

    def client(self) -> Host:
        """The host tests talk from."""
        return self.host("client")

    def wait_ready(self, api: str, timeout: float = 120) -> None:
        """Until ``api``'s ``/ready`` answers 200 (seen from the client host)."""

        def ready() -> bool:
            return httpx.get(f"{api}/ready", timeout=2).status_code == 200

        self.net.run_in(self.client(), wait_for, ready, timeout, f"{api}/ready")

    def submit(self, api: str, body: dict) -> str:
        """POST /async from the client host; returns the message id."""

        def post() -> str:
            response = httpx.post(f"{api}/v1/messages/async", json=body, timeout=30)
            assert response.status_code == 200, response.text
            return str(response.json()["message_id"])

        return self.net.run_in(self.client(), post)

    def status(self, api: str, message_id: str) -> dict:
        """GET status from the client host."""

        def get() -> dict:
            return dict(httpx.get(f"{api}/v1/messages/async/{message_id}/status", timeout=10).json())

        return self.net.run_in(self.client(), get)

    def status_hash(self, message_id: str) -> dict[str, str]:
        """The message's status hash, read from Redis by the client host."""

        def read() -> dict[str, str]:
            address = self.host("redis").address
            with redis.Redis(host=address, port=REDIS_PORT, decode_responses=True) as client:
                return dict(client.hgetall(message_keys(message_id).status))

        return self.net.run_in(self.client(), read)

    def worker_seen(self, prefix: str) -> float:
        """The latest heartbeat (unix s) of the worker whose hostname starts with ``prefix``."""

        def read() -> float:
            address = self.host("redis").address
            with redis.Redis(host=address, port=REDIS_PORT, decode_responses=True) as client:
                beats = client.zrange(WORKERS, 0, -1, withscores=True)
            return max((score for name, score in beats if name.startswith(prefix)), default=0.0)

        return self.net.run_in(self.client(), read)

    def observe(self, apis: list[str], message_id: str, read_timeout: float = 3.0) -> Observer:
        """An observer on the client host, moving to the next API (with Last-Event-ID) whenever
        its connection fails or stays silent longer than ``read_timeout`` (pings come every 0.5 s)."""
        observer = Observer(apis, message_id, read_timeout)
        self.net.thread_in(self.client(), observer.run)
        return observer

    def stop(self) -> None:
        for stack in self.stacks.values():
            stack.stop()


@dataclass
class Observer:
    """Reads one message's SSE stream until its terminal event; ``frames`` and where each came from."""

    apis: list[str]
    message_id: str
    read_timeout: float
    frames: list[Frame] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    connections: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not self.done.is_set():
            api = self.apis[self.connections % len(self.apis)]
            self.connections += 1
            headers = {"Last-Event-ID": self.frames[-1].id} if self.frames else {}
            url = f"{api}/v1/messages/async/{self.message_id}/stream"
            timeout = httpx.Timeout(self.read_timeout, connect=self.read_timeout)
            with (
                contextlib.suppress(httpx.HTTPError, OSError),
                httpx.stream("GET", url, headers=headers, timeout=timeout) as response,
            ):
                if response.status_code != 200:
                    time.sleep(0.2)  # e.g. a cursor the API cannot check yet: try again shortly
                    continue
                for frame in parse_lines(response.iter_lines()):
                    if frame.event == "ping":
                        continue
                    self.frames.append(frame)
                    self.sources.append(api)
                    if frame.event in TERMINAL:
                        self.done.set()
                        return

    def deltas(self) -> int:
        return sum(f.event == "content_block_delta" for f in self.frames)

    def wait(self, timeout: float) -> list[Frame]:
        assert self.done.wait(timeout), f"no terminal event; last {[f.event for f in self.frames][-3:]}"
        return self.frames


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
