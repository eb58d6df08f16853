"""What the live tail is made of: a tail per observed stream, a reader per tail connection, and
the client those connections come from."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from shared.redis_client import redis_client
from shared.settings import Settings
from shared.streams.contract import Pusher
from shared.streams.mailbox import Mailbox

#: How long one reader ``XREAD`` blocks; a reader whose streams all ended lingers at most this long.
TAIL_BLOCK_MS = 2000
#: Pause before a reader retries after a Redis error.
RETRY_SECONDS = 0.5
#: TTL of a reader's wake key (renewed by every wake).
WAKE_TTL_SECONDS = 600

#: A stream as the tail knows it: (message id, creation stamp).
Stream = tuple[str, str]
#: Raw entries as ``XREAD`` returns them.
Entries = list[tuple[str, dict[str, str]]]


@dataclass(eq=False)
class Tail:
    """One stream in this process: where its reader is, and who observes it."""

    stream: Stream
    key: str
    #: The status hash, read with a batch to see that the message is still the same one.
    status_key: str
    last: str
    #: Observers fed through their mailboxes.
    mailboxes: set[Mailbox] = field(default_factory=set)
    #: Caught-up observers the reader writes to directly (not in ``mailboxes`` meanwhile).
    pushers: dict[Mailbox, Pusher] = field(default_factory=dict)

    @property
    def epoch(self) -> str:
        """The creation stamp every batch of this tail is checked against."""
        return self.stream[1]

    @property
    def observed(self) -> bool:
        """True while some observer still follows the tail."""
        return bool(self.mailboxes or self.pushers)


@dataclass(eq=False)
class Reader:
    """One connection's worth of tails, read with one ``XREAD`` (plus the reader's wake key)."""

    wake_key: str
    tails: set[Tail] = field(default_factory=set)
    wake_last: str = "0-0"


def tail_client_for_url(url: str, name: str, *, block_ms: int = TAIL_BLOCK_MS) -> redis.Redis:
    """A client for readers of the Redis at ``url``: one connection per reader, never cut short
    while blocked (its socket timeout outlasts a blocked read by 10 s)."""
    return tail_client(Settings(redis_url=url), name, block_ms=block_ms)


def tail_client(settings: Settings, name: str, *, block_ms: int = TAIL_BLOCK_MS) -> redis.Redis:
    """``tail_client_for_url`` for the deployment's Redis (a URL or a Sentinel-managed primary)."""
    return redis_client(settings, name, socket_timeout=block_ms / 1000 + 10)
