"""Prefect blocks holding credentials, each with a typed, pooled API client (`get_client()`).

`prefect block register -m riposte.blocks` (or `riposte blocks register`) registers them all.
"""

from typing import TypeVar

from prefect.blocks.core import Block

from riposte.blocks.chat import ChatWebhook, SlackIncomingWebhook, TeamsWorkflowWebhook
from riposte.blocks.defender import DefenderCredentials
from riposte.blocks.email import EmailSmtp as EmailSmtp
from riposte.blocks.jira import JiraCredentials
from riposte.blocks.servicenow import ServiceNowCredentials
from riposte.blocks.ticketing import TicketingCredentials

B = TypeVar("B", bound=Block)

__all__ = [
    "ChatWebhook",
    "DefenderCredentials",
    "JiraCredentials",
    "ServiceNowCredentials",
    "SlackIncomingWebhook",
    "TeamsWorkflowWebhook",
    "TicketingCredentials",
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
