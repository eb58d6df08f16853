"""Hosts as Linux network namespaces on one virtual switch, and the faults injected between them.

Every host is a namespace with one interface (``eth0``, its own address on a private /24)
whose veth peer sits on a bridge in a namespace of its own (the switch), so no traffic ever
touches the machine's own network stack. Faults:

- partition: the host's switch port goes down (its TCP connections hang, as on a real cut);
- loss: a classic-BPF classifier on both ends of the host's link sends a random share of
  packets to an HTB class whose queue holds nothing (``pfifo limit 0``), so they are dropped;
  this kernel has neither ``netem`` nor ``gact`` (``tc qdisc … netem`` is refused), hence this;
- delay: ``tests/distributed/relay.py``, a TCP relay in the Redis host that holds every chunk
  for a fixed time in each direction (``netem`` would do it in the kernel).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, or no kernel support)."""


def ip(*args: str) -> None:
    """Run ``ip <args>``; raise with its output when it fails."""
    _run(["ip", *args])


def tc(namespace: str, *args: str) -> None:
    """Run ``tc <args>`` inside ``namespace``."""
    _run(["ip", "netns", "exec", namespace, "tc", *args])


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def probe() -> None:
    """Raise ``NetnsUnavailable`` with the reason if namespaces, veths or bridges cannot be made."""
    name = f"slprobe{os.getpid()}"
    try:
        ip("netns", "add", name)
        ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        ip("-n", name, "link", "add", "b0", "type", "bridge")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise NetnsUnavailable(f"cannot create network namespaces, veths and bridges here: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            ip("netns", "del", name)


def enter(namespace: str) -> None:
    """Move the calling thread into ``namespace``'s network stack (``setns``; Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({namespace}) failed")
    finally:
        os.close(fd)


@dataclass
class Host:
    """One namespace on the switch: its name, address and switch port."""

    name: str
    namespace: str
    address: str
    port: str  # the veth end on the switch

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *command]


@dataclass
class Network:
    """A switch and the hosts on it; ``close`` removes every namespace it made."""

    prefix: str = field(default_factory=lambda: f"sl{secrets.token_hex(2)}")
    subnet: str = field(default_factory=lambda: f"10.{secrets.randbelow(50) + 200}.{secrets.randbelow(250)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _executors: dict[str, ThreadPoolExecutor] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.switch = f"{self.prefix}-sw"
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str) -> Host:
        """A new host namespace with ``eth0`` = the next address, and ``lo`` up."""
        index = len(self.hosts) + 1
        namespace = f"{self.prefix}-{name}"
        port = f"p{index}"
        ip("netns", "add", namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")
        address = f"{self.subnet}.{index}"
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(name, namespace, address, port)
        self.hosts[name] = host
        return host

    def partition(self, host: Host) -> None:
        """Cut ``host`` off: its switch port goes down (packets vanish, nothing is reset)."""
        ip("-n", self.switch, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        """Reconnect ``host``."""
        ip("-n", self.switch, "link", "set", host.port, "up")

    def lossy(self, host: Host, percent: float) -> None:
        """Drop ``percent`` % of the packets in each direction of ``host``'s link, at random."""
        threshold = int(percent / 100 * 2**32)
        # ld rand; if rand >= threshold: no match (default class 1:1) else class 1:2 (dropped)
        program = f"4,32 0 0 {2**32 - 0x1000 + 56},53 0 1 {threshold},6 0 0 0,6 0 0 {0x10002}"
        for namespace, device in ((host.namespace, "eth0"), (self.switch, host.port)):
            on = ("dev", device)
            tc(namespace, "qdisc", "add", *on, "root", "handle", "1:", "htb", "default", "1", "r2q", "100000")
            for cls in ("1:1", "1:2"):
                tc(namespace, "class", "add", *on, "parent", "1:", "classid", cls, "htb", "rate", "10gbit")
            tc(namespace, "qdisc", "add", *on, "parent", "1:2", "handle", "20:", "pfifo", "limit", "0")
            tc(namespace, "filter", "add", *on, "parent", "1:", "bpf", "bytecode", program)

    def dropped(self, host: Host) -> int:
        """Packets the loss rule dropped so far on ``host``'s link (both directions)."""
        total = 0
        for namespace, device in ((host.namespace, "eth0"), (self.switch, host.port)):
            out = subprocess.run(
                ["ip", "netns", "exec", namespace, "tc", "-s", "qdisc", "show", "dev", device],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            block = (
                out.split("qdisc pfifo 20:", 1)[1].split("qdisc ", 1)[0] if "qdisc pfifo 20:" in out else ""
            )
            words = block.replace(",", " ").split()
            total += sum(int(words[i + 1]) for i, word in enumerate(words[:-1]) if word == "(dropped")
        return total

    def loss_rules(self, host: Host) -> int:
        """How many ends of ``host``'s link carry the loss classifier (2 once ``lossy`` ran)."""
        found = 0
        for namespace, device in ((host.namespace, "eth0"), (self.switch, host.port)):
            out = subprocess.run(
                ["ip", "netns", "exec", namespace, "tc", "filter", "show", "dev", device],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            found += "bpf" in out
        return found

    def run_in(self, host: Host, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on a thread that lives in ``host``'s network namespace."""
        with self._lock:
            if host.namespace not in self._executors:
                self._executors[host.namespace] = ThreadPoolExecutor(
                    max_workers=4, initializer=enter, initargs=(host.namespace,)
                )
            executor = self._executors[host.namespace]
        return executor.submit(fn, *args, **kwargs).result()

    def thread_in(self, host: Host, target: Callable[[], None]) -> threading.Thread:
        """A started daemon thread running ``target`` inside ``host``."""

        def run() -> None:
            enter(host.namespace)
            target()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Remove every namespace (their veths go with them)."""
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                ip("netns", "del", host.namespace)
        with contextlib.suppress(Exception):
            ip("netns", "del", self.switch)


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """A ``Network`` removed on exit."""
    net = Network()
    try:
        yield net
    finally:
        net.close()
