"""Notifications that link the ticket: Slack, Teams (chat webhooks) and email (SMTP)."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.context import TaskRunContext

from riposte.alerts.messages import MessageRenderer
from riposte.alerts.model import Alert
from riposte.alerts.policy import Templates
from riposte.alerts.response import Delivery, Ticket, response_revision
from riposte.blocks import load_block
from riposte.blocks._http import run_logger
from riposte.blocks.chat import ChatWebhook, SlackIncomingWebhook, TeamsWorkflowWebhook
from riposte.blocks.email import EmailSmtp
from riposte.blocks.errors import OutcomeUnknownError
from riposte.settings import get_settings
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call
from riposte.tasks.tickets import block_identity

Channel = ChatWebhook | EmailSmtp
_CHANNEL_TYPES: tuple[type[Block], ...] = (SlackIncomingWebhook, TeamsWorkflowWebhook, EmailSmtp)


def load_channel(name: str) -> Channel:
    """A notification block: ``block-type-slug/name``, or a bare name tried as Slack, Teams
    and email in turn."""
    if "/" in name:
        block = load_block(Block, name)
        if not isinstance(block, ChatWebhook | EmailSmtp):
            raise TypeError(f"block {name!r} is a {type(block).__name__}, not a channel")
        return block
    for kind in _CHANNEL_TYPES:
        try:
            found = kind.load(name)
        except ValueError:
            continue
        if isinstance(found, ChatWebhook | EmailSmtp):
            return found
    raise ValueError(f"no Slack, Teams or email block named {name!r}")


def channel_label(channel: Channel) -> str:
    return f"{channel.kind}:#{channel.channel}" if channel.kind != "email" else channel.channel


def post_chat(channel: ChatWebhook, message: dict[str, Any]) -> Delivery:
    """Post ``message`` to a chat webhook once. A post that was sent and whose answer was lost
    (a read timeout) is not repeated, by this call or by a retry of the task: the service most
    likely has it, and webhooks cannot be asked, so a second post would be a second message.
    It is reported as delivered, unconfirmed, and logged."""
    label = channel_label(channel)
    try:
        channel.get_client().post(message)
    except OutcomeUnknownError as exc:
        run_logger().warning(
            "%s; not posted again, so that nobody gets it twice (see the channel)", exc
        )
        return Delivery(channel=label, delivered=True, confirmed=False, detail=str(exc)[:300])
    return Delivery(channel=label, delivered=True)


def _notify_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    # Keyed by what the message is about (the ticket's correlation key): the alerts that share
    # a throttled ticket share one message per channel.
    subject = params.get("subject") or alert.correlation_key
    return cache_key("notify", subject, response_revision(alert), block_identity(params["channel"]))


@external_call(_notify_key, name="notify {alert.source}-{alert.id} {channel.kind}")
def notify(
    channel: Channel,
    alert: Alert,
    ticket: Ticket | None,
    templates: Templates | None = None,
    subject: str | None = None,
) -> Delivery:
    """Post the alert, with its ticket link, to one channel, with the rule's templates.

    Example:
        ```python
        notify(SlackIncomingWebhook.load("riposte-slack"), alert, ticket)
        ```
    """
    renderer = MessageRenderer(templates, get_settings().templates_dir)
    if isinstance(channel, EmailSmtp):
        # The same Message-ID on a repeat, so that a mail client shows one message.
        key = subject or alert.correlation_key
        message_id = f"<{key}.{response_revision(alert)}@riposte>"
        channel.get_client().send(renderer.email(alert, ticket), message_id=message_id)
        return Delivery(channel=channel_label(channel), delivered=True)
    return post_chat(channel, renderer.chat(channel.kind, alert, ticket))
