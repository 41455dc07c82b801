"""`ticket_and_notify`: a ticket for the alert (or a note on its group's), a message, the alert
marked in progress."""

from __future__ import annotations

from riposte.alerts.matching import PlannedAction, ticket_steps
from riposte.alerts.model import Alert
from riposte.playbooks.api import NoParams, playbook
from riposte.playbooks.context import Context


def _describe(params: NoParams, action: PlannedAction) -> list[str]:
    return ticket_steps(action)


@playbook(opens_ticket=True, describe=_describe)
def ticket_and_notify(alert: Alert, params: NoParams, ctx: Context) -> None:
    """Find or create the alert's ticket and post it to the rule's channels, or add the alert
    to its group's open ticket as a numbered note; then mark the alert in progress with a link
    to the ticket. A message that fails is reported; the alert is updated all the same."""
    opened = ctx.ticket()
    if opened.is_new:
        ctx.notify(ticket=opened.ticket)
    ctx.update_alert(opened.ticket)
    ctx.triage_alert()  # the rule's `triage:`, if any
    ctx.update_incident()  # the rule's `incident:`, if any
