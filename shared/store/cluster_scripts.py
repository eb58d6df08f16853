"""The store's scripts split in halves for Redis Cluster (``shared.store.cluster``).

A *message half* touches only the keys of one message (one hash slot, ``{<storage id>}``) and
runs on the cluster; a *control half* touches only the control Redis (indexes, tenant counters,
idempotency, the broker). Every message half that writes the stream also ``SPUBLISH``es the new
entry id on the message's wake channel (``MessageKeys.wake``, same slot), which wakes the API
processes' cluster tail readers.

The halves live by lifecycle: ``cluster_claim_scripts`` (create, claim), ``cluster_end_scripts``
(append, finish, delete), ``cluster_lease_scripts`` (renewal, the reaper's read); this module
lists them all.
"""

from __future__ import annotations

from typing import Any

from shared.store.cluster_claim_scripts import AdmitScript, MessageClaimScript, MessageCreateScript
from shared.store.cluster_end_scripts import (
    FinishControlScript,
    ForgetScript,
    MessageDeleteScript,
    MessageFinishScript,
    WakingAppendScript,
)
from shared.store.cluster_lease_scripts import MessageReapReadScript, MessageRenewScript
from shared.store.script import ScriptCall

#: Every script that runs on the cluster: each must name keys of one message only (a unit test
#: checks every call the cluster store makes).
MESSAGE_SCRIPTS: tuple[type[ScriptCall[Any]], ...] = (
    MessageCreateScript,
    MessageClaimScript,
    WakingAppendScript,
    MessageFinishScript,
    MessageDeleteScript,
    MessageRenewScript,
    MessageReapReadScript,
)
#: The control halves (on the control Redis).
CONTROL_SCRIPTS: tuple[type[ScriptCall[Any]], ...] = (AdmitScript, FinishControlScript, ForgetScript)
