"""Find-or-create of the alert's ticket in ServiceNow or Jira."""

from __future__ import annotations

from riposte.alerts.messages import ticket_draft
from riposte.alerts.model import Alert
from riposte.alerts.response import Route, Ticket
from riposte.blocks.ticketing import TicketingCredentials
from riposte.tasks._common import external_call


@external_call
def create_ticket(ticketing: TicketingCredentials, alert: Alert, route: Route) -> Ticket:
    """The alert's ticket: found by the alert's correlation key, created only if absent.

    Example:
        ```python
        ticket = create_ticket(ServiceNowCredentials.load("riposte-servicenow"), alert, route)
        ```
    """
    return ticketing.get_client().find_or_create(ticket_draft(alert, route))
