"""Prefect blocks holding credentials, each with a typed, pooled API client (`get_client()`).

`prefect block register -m riposte.blocks` (or `riposte blocks register`) registers them all.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

from prefect.blocks.core import Block

from riposte.blocks.chat import ChatWebhook, SlackIncomingWebhook, TeamsWorkflowWebhook
from riposte.blocks.coalesce import coalescing
from riposte.blocks.defender import DefenderCredentials
from riposte.blocks.email import EmailSmtp as EmailSmtp
from riposte.blocks.jira import JiraCredentials
from riposte.blocks.last_good_policy import LastGoodPolicy
from riposte.blocks.servicenow import ServiceNowCredentials
from riposte.blocks.ticketing import TicketingCredentials

B = TypeVar("B", bound=Block)

__all__ = [
    "ChatWebhook",
    "DefenderCredentials",
    "EmailSmtp",
    "JiraCredentials",
    "LastGoodPolicy",
    "ServiceNowCredentials",
    "SlackIncomingWebhook",
    "TeamsWorkflowWebhook",
    "TicketingCredentials",
    "BlockCache",
    "coalescing",
    "load_block",
]


def load_block(kind: type[B], name: str) -> B:
    """Load a saved block and check that it is of the expected kind.

    ``name`` is the block's name for that kind, or ``block-type-slug/name`` when ``kind`` is a
    common base (any ticketing system, any chat webhook).
    """
    loaded = (Block if "/" in name else kind).load(name)
    if not isinstance(loaded, kind):
        raise TypeError(f"block {name!r} is a {type(loaded).__name__}, not a {kind.__name__}")
    return loaded


class BlockCache:
    """Blocks loaded once for the duration of one flow run, shared by its threads.

    A batch answers a hundred alerts with the same few blocks; loading them once per run instead
    of once per alert saves an API read each, which under a burst is most of an alert's time.
    A rotated credential applies from the next run.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[type[Block], str], Block] = {}
        self._lock = threading.Lock()

    def load(self, kind: type[B], name: str, loader: Callable[[str], B] | None = None) -> B:
        """The block ``name`` of ``kind``, loaded once (by ``loader`` when given)."""
        with self._lock:
            found = self._loaded.get((kind, name))
        if isinstance(found, kind):
            return found
        # Two threads may both load: harmless, same value.
        loaded = loader(name) if loader is not None else load_block(kind, name)
        with self._lock:
            self._loaded[(kind, name)] = loaded
        return loaded
