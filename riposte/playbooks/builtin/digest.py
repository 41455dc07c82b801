"""`digest`: one summary message per channel per period instead of one message per alert."""

from __future__ import annotations

from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert
from riposte.alerts.policy import format_duration
from riposte.playbooks.api import NoParams, playbook
from riposte.playbooks.context import Context


def _describe(params: NoParams, action: PlannedAction) -> list[str]:
    if action.digest is None:
        return []
    return [
        f"add it to the digest posted to {action.digest.channel} "
        f"every {format_duration(action.digest.period)}"
    ]


@playbook(gating="digest", uses_digest=True, notifies=False, describe=_describe)
def digest(alert: Alert, params: NoParams, ctx: Context) -> None:
    """Record the alert in its digest bucket; the scheduled digest flow posts the summary."""
    ctx.add_to_digest()
