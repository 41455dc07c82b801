"""Find-or-create of the alert's ticket in ServiceNow or Jira."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.context import TaskRunContext

from riposte.alerts.messages import ticket_draft
from riposte.alerts.model import Alert
from riposte.alerts.response import Route, Ticket
from riposte.blocks.ticketing import TicketingCredentials
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call


def block_identity(block: Block) -> str:
    return f"{block.get_block_type_slug()}/{block._block_document_name or 'unsaved'}"


def _ticket_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    return cache_key("ticket", alert.correlation_key, block_identity(params["ticketing"]))


@external_call(_ticket_key, name="ticket {alert.source}-{alert.id}")
def create_ticket(ticketing: TicketingCredentials, alert: Alert, route: Route) -> Ticket:
    """The alert's ticket: found by the alert's correlation key, created only if absent.

    Example:
        ```python
        ticket = create_ticket(ServiceNowCredentials.load("riposte-servicenow"), alert, route)
        ```
    """
    return ticketing.get_client().find_or_create(ticket_draft(alert, route))
