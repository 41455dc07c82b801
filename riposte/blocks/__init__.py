"""Prefect blocks holding credentials, each with a typed, pooled API client (`get_client()`).

`prefect block register -m riposte.blocks` (or `riposte blocks register`) registers them all.
"""

from riposte.blocks.chat import ChatWebhook, SlackIncomingWebhook, TeamsWorkflowWebhook
from riposte.blocks.defender import DefenderCredentials
from riposte.blocks.jira import JiraCredentials
from riposte.blocks.servicenow import ServiceNowCredentials

TicketingBlock = ServiceNowCredentials | JiraCredentials

__all__ = [
    "ChatWebhook",
    "DefenderCredentials",
    "JiraCredentials",
    "ServiceNowCredentials",
    "SlackIncomingWebhook",
    "TeamsWorkflowWebhook",
    "TicketingBlock",
]
