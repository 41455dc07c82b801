"""`escalate`: `ticket_and_notify` at high priority, paging the on-call channels, then the
approval-gated containment the rule names."""

from __future__ import annotations

from riposte.alerts.matching import PlannedAction, ticket_steps
from riposte.alerts.model import Alert
from riposte.alerts.response import Priority
from riposte.playbooks.api import NoParams, playbook
from riposte.playbooks.context import Context


def _describe(params: NoParams, action: PlannedAction) -> list[str]:
    steps = ticket_steps(action, notify_verb="page")
    if action.containment is not None:
        steps.append(action.containment.describe())
    else:
        steps.append("no containment (the rule names no containment actions)")
    return steps


@playbook(
    opens_ticket=True,
    contains=True,
    pages_oncall=True,
    min_priority=Priority.HIGH,
    describe=_describe,
)
def escalate(alert: Alert, params: NoParams, ctx: Context) -> None:
    """A ticket at high priority or above (unless the rule names a priority), posted to the
    rule's channels and paged to `defaults.oncall_channels`; then the rule's containment,
    asked of its approvers (one request per ticket and set of actions)."""
    opened = ctx.ticket()
    if opened.is_new:
        ctx.notify(ticket=opened.ticket)
    ctx.update_alert(opened.ticket)
    ctx.triage_alert()  # the rule's `triage:`, if any
    ctx.update_incident()  # the rule's `incident:`, if any
    ctx.request_containment(ticket=opened.ticket)
