"""A small HTTP client of the Sluice API: submit, status, cancel, delete, and SSE frames.

Exceptions::

    ClientError           anything the CLI reports as one line and exit code 1
    ├── ApiError          the API answered with an error envelope (or a non-JSON error)
    └── Unreachable       no answer at all: refused, timed out, cut, bad URL
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

ASYNC = "/v1/messages/async"
BATCHES = "/v1/messages/batches"


class ClientError(Exception):
    """A failure the CLI shows as one clear line."""


class ApiError(ClientError):
    """The API refused: HTTP status, Anthropic error type and its message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message


class Unreachable(ClientError):
    """The API could not be reached, or the connection broke."""


@dataclass(frozen=True)
class Frame:
    """One SSE frame: its id (None for pings), event name and parsed data."""

    id: str | None
    event: str
    data: dict[str, Any]


def parse_sse(lines: Iterable[str]) -> Iterator[Frame]:
    """Frames from the text lines of an SSE response; a frame cut off before its blank line is dropped."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                raw = "\n".join(data)
                payload = json.loads(raw)
                yield Frame(fields.get("id"), fields.get("event") or payload.get("type", "message"), payload)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


def api_error(response: httpx.Response) -> ApiError:
    """The ``ApiError`` for an error response, reading Anthropic's envelope when there is one."""
    try:
        body = response.json()
        error = body["error"]
        return ApiError(response.status_code, str(error["type"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
        return ApiError(response.status_code, "http_error", text[:200])


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The key in both headers the API accepts (what the Anthropic SDKs and curl users send)."""
    if not api_key:
        return {}
    return {"x-api-key": api_key, "Authorization": f"Bearer {api_key}"}


class SluiceClient:
    """The API at ``base_url``; every call raises ``ClientError`` subclasses, never httpx's."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={**auth_headers(api_key), "user-agent": "sluice-cli"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> SluiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.InvalidURL as exc:
            raise Unreachable(f"invalid URL {self.base_url!r}: {exc}") from None
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {describe(exc)}") from None
        if response.status_code >= 400:
            raise api_error(response)
        try:
            result: dict[str, Any] = response.json()
        except ValueError:
            raise ApiError(response.status_code, "http_error", "the answer is not JSON") from None
        return result

    def submit(self, body: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
        """POST /v1/messages/async; the API's answer (``message_id``, ``status``, ``message``)."""
        params = {"message_id": message_id} if message_id else None
        return self._call("POST", ASYNC, json=body, params=params)

    def status(self, message_id: str) -> dict[str, Any]:
        """GET .../status."""
        return self._call("GET", f"{ASYNC}/{message_id}/status")

    def cancel(self, message_id: str) -> dict[str, Any]:
        """POST .../cancel."""
        return self._call("POST", f"{ASYNC}/{message_id}/cancel")

    def delete(self, message_id: str) -> dict[str, Any]:
        """DELETE .../delete."""
        return self._call("DELETE", f"{ASYNC}/{message_id}/delete")

    def batch_create(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /v1/messages/batches; the MessageBatch."""
        return self._call("POST", BATCHES, json={"requests": requests})

    def batch(self, batch_id: str) -> dict[str, Any]:
        """GET /v1/messages/batches/{id}."""
        return self._call("GET", f"{BATCHES}/{batch_id}")

    def batch_cancel(self, batch_id: str) -> dict[str, Any]:
        """POST /v1/messages/batches/{id}/cancel."""
        return self._call("POST", f"{BATCHES}/{batch_id}/cancel")

    def batch_results(self, batch_id: str) -> Iterator[str]:
        """The results file's lines, streamed."""
        try:
            with self._http.stream("GET", f"{BATCHES}/{batch_id}/results") as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response)
                yield from (line for line in response.iter_lines() if line.strip())
        except httpx.HTTPError as exc:
            raise Unreachable(describe(exc)) from None

    @contextmanager
    def stream(self, message_id: str, after: str | None, read_timeout: float) -> Iterator[Iterator[Frame]]:
        """Open .../stream (resuming strictly after ``after``) and yield its frames.

        HTTP errors raise ``ApiError``; a broken connection while reading raises ``Unreachable``.
        """
        headers = {"Last-Event-ID": after} if after else {}
        timeout = httpx.Timeout(self._http.timeout.connect or 10.0, read=read_timeout)
        try:
            with self._http.stream(
                "GET", f"{ASYNC}/{message_id}/stream", headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response)
                yield _guarded(parse_sse(response.iter_lines()))
        except httpx.HTTPError as exc:
            raise Unreachable(describe(exc)) from None


def _guarded(frames: Iterator[Frame]) -> Iterator[Frame]:
    """``frames``, with a broken connection or a garbled frame raised as ``Unreachable``."""
    try:
        yield from frames
    except httpx.HTTPError as exc:
        raise Unreachable(describe(exc)) from None
    except ValueError as exc:  # a frame whose data is not JSON: treat as a broken stream
        raise Unreachable(f"garbled event: {exc}") from None


def describe(exc: BaseException) -> str:
    """A short human text for a transport exception (its message, or its class name)."""
    text = str(exc).strip()
    return text or type(exc).__name__
