"""Find-or-create of the alert's ticket in ServiceNow or Jira."""

from __future__ import annotations

from prefect import task

from riposte.alerts.messages import ticket_draft
from riposte.alerts.model import Alert
from riposte.alerts.response import Route, Ticket
from riposte.blocks.ticketing import TicketingCredentials
from riposte.tasks._common import TASK_RETRIES, TASK_RETRY_DELAYS, retry_unless_permanent


@task(
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    persist_result=True,
)
def create_ticket(ticketing: TicketingCredentials, alert: Alert, route: Route) -> Ticket:
    """The alert's ticket: found by the alert's correlation key, created only if absent.

    Example:
        ```python
        ticket = create_ticket(ServiceNowCredentials.load("riposte-servicenow"), alert, route)
        ```
    """
    return ticketing.get_client().find_or_create(ticket_draft(alert, route))
