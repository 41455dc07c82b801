"""Chat notifications (Slack, Teams) that link the ticket."""

from __future__ import annotations

from riposte.alerts.messages import CHAT_RENDERERS
from riposte.alerts.model import Alert
from riposte.alerts.response import Delivery, Ticket
from riposte.blocks.chat import ChatWebhook
from riposte.tasks._common import external_call


@external_call
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
