"""Lean asyncio HTTP clients for load: raw sockets, so the client costs less CPU than the server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TEXT_MARK = b'"text":"#'


def host_port(base_url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://host:port`` URL."""
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def post_request(host: str, port: int, path: str, payload: dict[str, Any]) -> bytes:
    """A keep-alive HTTP/1.1 POST with a JSON body, as bytes to send again and again."""
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class KeepAlive:
    """One keep-alive connection that sends the same request and times each answer."""

    host: str
    port: int
    request: bytes
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection unless it is open."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def local_port(self) -> int:
        """The client-side port of the open connection (0 when closed)."""
        if self._writer is None:
            return 0
        return int(self._writer.get_extra_info("sockname")[1])

    async def send(self) -> bytes:
        """Send the request, time it into ``latencies`` and return the answer's body."""
        started = time.perf_counter()
        status, body = await self._exchange()
        self.latencies.append(time.perf_counter() - started)
        if status != 200:
            self.failures += 1
        return body

    async def exchange(self) -> bool:
        """Send the request and read the whole answer, untimed; True for a 200."""
        status, _ = await self._exchange()
        return status == 200

    async def _exchange(self) -> tuple[int, bytes]:
        await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(self.request)
        status, headers = await _read_head(self._reader)
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def sse_frames(base_url: str, path: str) -> AsyncIterator[tuple[float, bytes]]:
    """``(arrival perf_counter, raw frame)`` of an SSE response, read over HTTP/1.0 (no chunking)."""
    host, port = host_port(base_url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        status, _ = await _read_head(reader)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}")
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.perf_counter()
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for raw in frames:
                yield now, raw
    finally:
        writer.close()


def frame_event(raw: bytes) -> str:
    """The ``event:`` name of a raw SSE frame."""
    start = raw.find(b"event: ")
    if start < 0:
        return ""
    end = raw.find(b"\n", start)
    return raw[start + 7 : end if end >= 0 else None].decode()


def frame_id(raw: bytes) -> str | None:
    """The ``id:`` of a raw SSE frame (pings have none)."""
    if not raw.startswith(b"id: "):
        return None
    return raw[4 : raw.find(b"\n")].decode()


def text_seq(raw: bytes) -> int | None:
    """The sequence number a benchmark wrote at the start of a text delta (``#<n> ``)."""
    start = raw.find(TEXT_MARK)
    if start < 0:
        return None
    start += len(TEXT_MARK)
    end = raw.find(b" ", start)
    return int(raw[start:end])
