"""Celery task messages for the Redis broker, built without kombu on the submit path.

kombu's Redis transport keeps a queue's messages as JSON strings in Redis lists
(``shared.keys.broker_list``): publishing is one ``LPUSH`` of a protocol-2 message,
``{body (base64 of [args, kwargs, embed]), headers, properties}``. Building it
through ``send_task`` costs more than everything else a submit does, so the API
builds the same string here, from a template prepared once per (queue, band), and
the store's create script pushes it in the round trip that creates the message.
Workers, Flower and events are plain Celery; ``tests/unit/test_broker.py`` compares
this message with the one Celery's own ``send_task`` writes.

The same task is also queued a second way: the reaper (``workers/reaper.py``) sends it with
``send_task`` for a message whose worker died (no create to join there, and speed does not
matter). Both must stay in sync: task name, its one argument, queue and band, layout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from shared.celery_config import CORRELATION_HEADER, GENERATE_TASK
from shared.keys import broker_list

# Placeholders in a template, each replaced by a JSON-encoded per-message value: a NUL never
# appears in a real value, and JSON writes it as \u0000, so the quoted placeholder is unambiguous.
_MARK = "\x00slot:{}\x00"
_SLOT = re.compile(r'"\\u0000slot:(\w+)\\u0000"')


@dataclass(frozen=True)
class TaskMessage:
    """One task message: the broker list it goes to and the JSON string to push there."""

    list_key: str
    payload: str


class _Template:
    """A message for one (queue, band) as JSON text split around its per-message slots."""

    def __init__(self, queue: str, band: int, origin: str, reply_to: str) -> None:
        headers: dict[str, Any] = {
            "lang": "py",
            "task": GENERATE_TASK,
            "id": _MARK.format("task_id"),
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": _MARK.format("task_id"),
            "parent_id": None,
            "argsrepr": _MARK.format("argsrepr"),
            "kwargsrepr": _MARK.format("kwargsrepr"),
            "origin": origin,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            CORRELATION_HEADER: _MARK.format("correlation"),
        }
        properties: dict[str, Any] = {
            "correlation_id": _MARK.format("task_id"),
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": band,
            "body_encoding": "base64",
            "delivery_tag": _MARK.format("delivery_tag"),
        }
        message = {
            "body": _MARK.format("body"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        pieces = _SLOT.split(json.dumps(message))
        self.parts, self.slots = pieces[0::2], pieces[1::2]
        self.list_key = broker_list(queue, band)

    def fill(self, values: dict[str, str]) -> str:
        """The message text with each slot's JSON-encoded value."""
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            out.append(values[slot])
            out.append(part)
        return "".join(out)


#: ``[args, kwargs, embed]`` of a task without callbacks, around its one argument and its kwargs.
_BODY_HEAD = "[["
_BODY_MID = "], "
_BODY_TAIL = ', {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


class TaskMessages:
    """Builds ``sluice.generate`` messages as Celery's ``send_task`` would; one per API process."""

    def __init__(self) -> None:
        # What Celery puts there for a producer that is not a worker (``anon_nodename``), and a
        # reply queue id per producer (only result backends of the RPC kind read it; we have none).
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())
        self._templates: dict[tuple[str, int], _Template] = {}

    def generate(
        self, message_id: str, queue: str, band: int, correlation_id: str = "", route: str = ""
    ) -> TaskMessage:
        """The message that runs ``message_id`` on ``queue`` at kombu priority ``band``; with
        ``route``, the private queue of the worker that holds the conversation (a kwarg, so
        Flower shows it; ``shared.routing``)."""
        template = self._templates.get((queue, band))
        if template is None:
            template = self._templates[(queue, band)] = _Template(queue, band, self.origin, self.reply_to)
        arg = json.dumps(message_id)
        kwargs = {"route": route} if route else {}
        body = f"{_BODY_HEAD}{arg}{_BODY_MID}{json.dumps(kwargs)}{_BODY_TAIL}"
        values = {
            "body": f'"{base64.b64encode(body.encode()).decode()}"',
            "task_id": f'"{uuid.uuid4()}"',
            "argsrepr": json.dumps(repr([message_id])),
            "kwargsrepr": json.dumps(repr(kwargs)),
            "correlation": json.dumps(correlation_id),
            "delivery_tag": f'"{uuid.uuid4()}"',
        }
        return TaskMessage(template.list_key, template.fill(values))
