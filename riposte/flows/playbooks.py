"""Run one playbook for one alert by hand: the `run_playbook` flow, deployed once per registered
playbook (``run_playbook/<name>``), and the built-ins' own flows (``ticket_and_notify``...).

A response (`riposte.flows.respond`) runs playbooks inline, so that every step stays a top-level
task run of the response. Run by hand, a playbook gets the policy's parameters for the alert (of
the rule that picks this playbook for it, else the defaults) with the person's parameters over
them, and no throttle, grouping or suppression: a person asked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from prefect import Flow, get_run_logger
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run

from riposte.alerts.matching import PlannedAction, evaluate
from riposte.alerts.model import Alert
from riposte.alerts.plain import log_text
from riposte.alerts.policy import (
    Fallback,
    Playbook,
    Policy,
    format_loc,
    validate_playbook_params,
)
from riposte.alerts.sources import SourceName
from riposte.alerts.throttle import gate
from riposte.flows._common import P, R, plan_of, shared_param_docs, stored_flow
from riposte.playbooks.context import (
    DEFAULT_DEFENDER,
    ActionResult,
    Context,
    NotificationsFailed,
    Plan,
    ResponseContext,
)
from riposte.playbooks.registry import registry
from riposte.playbooks.runner import report_problems, run_action
from riposte.settings import PLAYBOOK_FLOW
from riposte.tasks.alerts import fetch_alert
from riposte.tasks.decide import current_policy
from riposte.tasks.ledgers import NoSuppressions, NoTickets
from riposte.tasks.runs import alert_run_name

__all__ = [
    "DEFAULT_DEFENDER",
    "ActionResult",
    "NotificationsFailed",
    "Plan",
    "ResponseContext",
    "close_benign",
    "digest",
    "escalate",
    "manual_action",
    "run_playbook",
    "ticket_and_notify",
]


def manual_action(
    policy: Policy, alert: Alert, playbook: str, params: dict[str, Any] | None = None
) -> PlannedAction:
    """The action ``playbook`` takes for ``alert`` when a person asks for it: the parameters of
    the policy's rule if it picks this playbook for the alert, else the policy's defaults, with
    ``params`` over the playbook's own; never throttled, grouped, suppressed or allowlisted.
    Raises `ValueError` naming what is wrong with ``params``."""
    info = policy.playbook(playbook)
    given = dict(params or {})
    # Only the playbook's own parameters: a person running it by hand (or whoever can create a
    # run through the Prefect API) never sets the rule's containment, approvers or channels.
    _, problems = validate_playbook_params(info, given)
    if problems:
        raise ValueError(
            "; ".join(f"{format_loc(loc) if loc else '(parameters)'}: {m}" for loc, m in problems)
        )
    chosen = next((a for a in evaluate(policy, alert).actions if a.playbook == playbook), None)
    if chosen is None:
        manual = policy.model_copy(
            update={"rules": (), "allow": None, "fallback": Fallback(playbook=playbook)}
        )
        chosen = evaluate(manual, alert).final
    if given:
        merged = info.params_model.model_validate({**chosen.params, **given})
        chosen = chosen.model_copy(update={"params": merged.model_dump(mode="json", by_alias=True)})
    chosen = chosen.model_copy(
        update={"throttle": None, "group_by_incident": False, "suppress": None, "allowlisted": None}
    )
    try:
        described = tuple(info.describe(chosen))
    except Exception as exc:  # words only: never worth failing the run
        described = (f"(the {playbook} playbook's describe failed: {type(exc).__name__}: {exc})",)
    return chosen.model_copy(update={"described": described})


def run_by_hand(
    playbook: str,
    alert_id: str,
    source: str,
    plan: Plan,
    params: dict[str, Any] | None = None,
    response: ResponseContext | None = None,
) -> ActionResult:
    """Fetch the alert, take the policy's action for it with ``playbook`` (and ``params``), and
    run the playbook. Messages not sent, and steps that failed without stopping it (a triage or
    an incident not written), fail the run once the rest is done."""
    logger = get_run_logger()
    report_problems(logger)
    found = registry().get(playbook)
    response = response or ResponseContext(plan)
    alert = fetch_alert(response.defender, source, alert_id)
    snapshot = current_policy(logger)
    try:
        action = manual_action(snapshot.policy, alert, playbook, params)
    except ValueError as exc:
        raise ValueError(f"playbook {playbook}: parameters refused: {exc}") from None
    if found.uses_digest and found.gating == "digest" and action.digest is None:
        raise ValueError("the policy names no digest channel (`defaults.digest`)")
    outcome = gate(
        action, alert, at=alert.created_at, tickets=NoTickets(), suppressions=NoSuppressions()
    )
    result = run_action(Context(response, alert, action, outcome))
    logger.info("%s for %s-%s: %s", playbook, source, alert_id, result.disposition)
    if result.failures:
        # Defanged: Prefect logs the run's final state, message included, as a log row.
        raise NotificationsFailed(log_text(result.failure_message))
    return result


def playbook_of_run(given: str | None) -> str:
    """The playbook a `run_playbook` run is for: the given name, else its deployment's name."""
    if given:
        return given
    name = current_deployment.name
    if not name:
        raise ValueError("run_playbook needs `playbook` when it is not run from its deployment")
    return str(name)


def _manual_run_name() -> str:
    """`<playbook>-<source>-<alert id>`, or the name the run was given if it is that name
    followed by a space and more (`alert_run_name`)."""
    parameters = current_flow_run.parameters or {}
    name = str(parameters.get("playbook") or current_deployment.name or "playbook")
    return alert_run_name(name.replace("{", "{{").replace("}", "}}") + "-{source}-{alert_id}")()


@stored_flow(PLAYBOOK_FLOW, _manual_run_name)
@shared_param_docs
def run_playbook(
    alert_id: str,
    source: SourceName = "graph",
    params: dict[str, Any] | None = None,
    playbook: str | None = None,
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> ActionResult:
    """Run one playbook for one alert, by hand. Each deployment ``run_playbook/<name>`` runs
    the playbook of its name; its Custom run form asks for the alert and the playbook's
    parameters. A Retry, or a second run for the same alert, repeats no side effect.

    Args:
        alert_id: {shared}
        source: {shared}
        params: The playbook's own parameters, over the policy's for this alert; leave a field
            out to keep the policy's value.
        playbook: The playbook to run; empty: the one the deployment is named after.
        defender_block: {shared}
        ticketing_block: {shared}
        channel_blocks: {shared}
    """
    name = playbook_of_run(playbook)
    plan = plan_of(defender_block, ticketing_block, channel_blocks)
    return run_by_hand(name, alert_id, source, plan, params or None)


# --- the built-ins' own flows, as before the playbook API (kept for scripts) ---------------


def _builtin_flow(name: str) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """The flow of the built-in playbook ``name``: runs named `<name>-<source>-<alert id>`."""
    return stored_flow(name, alert_run_name(name + "-{source}-{alert_id}"))


@_builtin_flow("ticket_and_notify")
@shared_param_docs
def ticket_and_notify(
    alert_id: str,
    source: SourceName = "graph",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> ActionResult:
    """Open (or find) the alert's own ticket, post it to the channels, mark the alert in
    progress. Blocks default to what the policy names for the alert.

    Args:
        alert_id: {shared}
        source: {shared}
        defender_block: {shared}
        ticketing_block: {shared}
        channel_blocks: {shared}
    """
    plan = plan_of(defender_block, ticketing_block, channel_blocks)
    return run_by_hand(Playbook.TICKET_AND_NOTIFY, alert_id, source, plan)


# The parameters of `ticket_and_notify`, as its own deployable flow: its run form reads them.
@_builtin_flow("escalate")
@shared_param_docs
def escalate(
    alert_id: str,
    source: SourceName = "graph",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> ActionResult:
    """A high-priority ticket for the alert, posted to the channels and paged to the policy's
    on-call channels, then the rule's containment behind approval.

    Args:
        alert_id: {shared}
        source: {shared}
        defender_block: {shared}
        ticketing_block: {shared}
        channel_blocks: {shared}
    """
    plan = plan_of(defender_block, ticketing_block, channel_blocks)
    return run_by_hand(Playbook.ESCALATE, alert_id, source, plan)


@_builtin_flow("close_benign")
@shared_param_docs
def close_benign(
    alert_id: str,
    source: SourceName = "graph",
    reason: str | None = None,
    classification: Literal["benign", "false_positive"] = "benign",
    defender_block: str = DEFAULT_DEFENDER,
) -> ActionResult:
    """Close the alert at its source as benign (or a false positive) with ``reason``; without
    one, the reason of the policy's close_benign rule for the alert.

    Args:
        alert_id: {shared}
        source: {shared}
        reason: Why the alert is closed, written on it at its source; empty: the reason of
            the policy's close_benign rule for the alert (and its classification).
        classification: How the alert is closed, when a reason is given: benign (true but
            harmless) or false_positive.
        defender_block: {shared}
    """
    params = {"close": {"classification": classification, "reason": reason}} if reason else None
    plan = plan_of(defender_block, None, None)
    result = run_by_hand(Playbook.CLOSE_BENIGN, alert_id, source, plan, params)
    return result


@_builtin_flow("digest")
@shared_param_docs
def digest(
    alert_id: str,
    source: SourceName = "graph",
    defender_block: str = DEFAULT_DEFENDER,
) -> ActionResult:
    """Put the alert in the digest the policy names for it (its rule's, else the default
    one); the scheduled `post_digests` flow posts it with its period's summary.

    Args:
        alert_id: {shared}
        source: {shared}
        defender_block: {shared}
    """
    plan = plan_of(defender_block, None, None)
    return run_by_hand(Playbook.DIGEST, alert_id, source, plan)
