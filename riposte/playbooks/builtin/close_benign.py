"""`close_benign`: close the alert at its source as benign or a false positive, with a reason."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert
from riposte.alerts.policy import Close, Defaults, RuleParameters
from riposte.playbooks.api import Loc, playbook
from riposte.playbooks.context import Context


class CloseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    close: Close | None = Field(
        None, description="How to close the alert: {classification: benign|false_positive, reason}"
    )


def _checks(
    params: CloseParams, rule: RuleParameters, defaults: Defaults
) -> Iterator[tuple[Loc, str]]:
    if params.close is None:
        yield (), "the close_benign playbook needs `close: {classification, reason}`"


def _describe(params: CloseParams, action: PlannedAction) -> list[str]:
    if params.close is None:
        return ["close the alert in Defender (no reason given: the run fails)"]
    label = params.close.classification.replace("_", " ")
    return [f"close the alert in Defender as {label}: {params.close.reason}"]


@playbook(gating="close", notifies=False, checks=_checks, describe=_describe)
def close_benign(alert: Alert, params: CloseParams, ctx: Context) -> None:
    """Close the alert at its source as benign or a false positive, with the rule's reason."""
    if params.close is None:  # the policy check refuses this; a hand-made run may not
        raise ValueError(
            f"rule {ctx.rule!r}: close_benign needs `close: {{classification, reason}}`"
        )
    ctx.close_alert(params.close.classification, params.close.reason)
