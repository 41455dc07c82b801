"""`ignore`: nothing but a record of the alert in the run."""

from __future__ import annotations

from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert
from riposte.playbooks.api import NoParams, playbook
from riposte.playbooks.context import Context


def _describe(params: NoParams, action: PlannedAction) -> list[str]:
    return ["nothing: the alert is ignored (recorded, no ticket, no message)"]


@playbook(gating="ignore", notifies=False, describe=_describe)
def ignore(alert: Alert, params: NoParams, ctx: Context) -> None:
    """Do nothing; the response's run records the alert and the rule that ignored it."""
