"""Chat notifications (Slack, Teams) that link the ticket."""

from __future__ import annotations

from typing import Any

from prefect.context import TaskRunContext

from riposte.alerts.messages import CHAT_RENDERERS
from riposte.alerts.model import Alert
from riposte.alerts.response import Delivery, Ticket, response_revision
from riposte.blocks.chat import ChatWebhook
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call
from riposte.tasks.tickets import block_identity


def _notify_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    return cache_key(
        "notify", alert.correlation_key, response_revision(alert), block_identity(params["channel"])
    )


@external_call(_notify_key, name="notify {alert.source}-{alert.id} {channel.kind}")
def notify(channel: ChatWebhook, alert: Alert, ticket: Ticket | None) -> Delivery:
    """Post the alert, with its ticket link, to one chat channel.

    Example:
        ```python
        notify(SlackIncomingWebhook.load("riposte-slack"), alert, ticket)
        ```
    """
    message = CHAT_RENDERERS[channel.kind](alert, ticket)
    channel.get_client().post(message)
    return Delivery(channel=f"{channel.kind}:#{channel.channel}", delivered=True)
