"""Chat notification blocks: a Slack incoming webhook and a Microsoft Teams Workflows webhook.

Prefect ships `SlackWebhook` and `MicrosoftTeamsWebhook`, but they go through apprise, whose Slack
plugin always posts to hooks.slack.com (so it cannot reach the sandbox) and which sends plain text
only, not Slack blocks or an Adaptive Card. These two small blocks post the JSON we render.
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from riposte.blocks._http import build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.errors import ServiceRejectedError


class ChatWebhook(Block, ABC):
    """Common shape of our chat blocks (an interface, not a block type): a secret webhook URL
    and a display name for the channel."""

    _block_schema_capabilities: ClassVar[list[str]] = ["notify"]
    kind: ClassVar[str] = ""
    system: ClassVar[str] = ""

    url: SecretStr = Field(description="The webhook URL; it is a credential, keep it secret.")
    channel: str = Field("security-alerts", description="Channel name shown in run reports.")
    timeout_seconds: float = Field(10.0, gt=0)

    def get_client(self) -> WebhookClient:
        return pooled(self, lambda: WebhookClient(self))


class SlackIncomingWebhook(ChatWebhook):
    """A Slack incoming webhook. The message is Slack blocks with a text fallback.

    Example:
        ```python
        slack = SlackIncomingWebhook.load("riposte-slack")
        slack.get_client().post({"text": "hello"})
        ```
    """

    # Prefect registers a block type by these attributes: each block declares its own.
    _block_type_name = "Slack Incoming Webhook"
    _block_type_slug = "slack-incoming-webhook"
    _logo_url = None
    _description = "Slack incoming webhook URL (https://hooks.slack.com/services/...)."
    kind: ClassVar[str] = "slack"
    system: ClassVar[str] = "Slack"


class TeamsWorkflowWebhook(ChatWebhook):
    """A Microsoft Teams channel reached through a Workflows "post to a channel" webhook.

    Example:
        ```python
        teams = TeamsWorkflowWebhook.load("riposte-teams")
        teams.get_client().post(adaptive_card_message)
        ```
    """

    _block_type_name = "Teams Workflow Webhook"
    _block_type_slug = "teams-workflow-webhook"
    _logo_url = None
    _description = "Teams Workflows webhook URL (the flow's HTTP trigger, with its sig)."
    kind: ClassVar[str] = "teams"
    system: ClassVar[str] = "Microsoft Teams"


class WebhookClient:
    """Posts JSON to a webhook; any 2xx is delivery (Teams answers 202 and works asynchronously)."""

    def __init__(self, block: ChatWebhook) -> None:
        self.system = block.system
        self.channel = block.channel
        # The URL is the secret: keep it out of the client's base_url and out of every message.
        self._url = block.url.get_secret_value()
        self._http = build_http_client(self.system, "", timeout=block.timeout_seconds)

    def post(self, payload: dict[str, Any]) -> None:
        response = send(
            self._http, self.system, f"message to #{self.channel}", "POST", self._url, json=payload
        )
        # Slack answers 200 with the text "ok"; anything else in a 200 means it was not posted.
        if self.system == "Slack" and response.text.strip() not in ("ok", ""):
            raise ServiceRejectedError(
                self.system, f"message to #{self.channel} refused: {response.text[:100]}"
            )
