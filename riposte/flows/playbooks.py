"""The playbooks: `ticket_and_notify`, `escalate`, `close_benign` and `digest`, made of the shared
tasks.

Each playbook is a plain function over one alert and the policy's outcome for it, run inline by
`riposte.flows.respond.answer` so that every step stays a top-level task run of the response
(a subflow per alert would cost about six times more, and a task inside a task would share its
transaction and locks). Each is also a flow of its own name, to run one playbook for one alert
by hand (from Python, or a deployment): the policy's parameters for the alert apply, without
throttles, grouping or suppression, since a person asked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict

from riposte.alerts.approval import ApproverRef, ContainmentRequest
from riposte.alerts.containment import ContainmentPlanError, plan_actions
from riposte.alerts.matching import PlannedAction, evaluate
from riposte.alerts.model import Alert
from riposte.alerts.policy import Close, Fallback, Playbook, Policy
from riposte.alerts.response import Delivery, Ticket, ref_for
from riposte.alerts.throttle import Disposition, Outcome, gate
from riposte.blocks import BlockCache, DefenderCredentials, TicketingCredentials
from riposte.settings import get_settings
from riposte.tasks.alerts import AlertUpdate, close_alert, fetch_alert, update_alert
from riposte.tasks.approvals import start_containment
from riposte.tasks.digests import add_to_digest
from riposte.tasks.ledgers import NoSuppressions, NoTickets
from riposte.tasks.notify import load_channel, notify
from riposte.tasks.policy import (
    current_policy,
    record_response,
    ticket_place,
    ticketing_block_name,
)
from riposte.tasks.tickets import comment_on_ticket, open_ticket

DEFAULT_DEFENDER = "riposte-defender"


class NotificationsFailed(RuntimeError):
    """Some messages were not sent; the rest of the response was done."""


class Plan(BaseModel):
    """Where a response goes: block names only, never secrets. ``None`` means: as the policy
    says; a value overrides the policy for this run (a person re-running an alert elsewhere)."""

    model_config = ConfigDict(frozen=True)

    defender_block: str = DEFAULT_DEFENDER
    ticketing_block: str | None = None
    channel_blocks: tuple[str, ...] | None = None


class ActionResult(BaseModel):
    """What one policy action did for an alert."""

    rule: str
    playbook: str
    disposition: str
    reason: str
    ticket: Ticket | None = None
    ticket_created: bool = False
    alert_number: int | None = None
    """Set when the alert was added to an existing ticket: its number on that ticket."""
    deliveries: list[Delivery] = []
    digest: str | None = None
    """The digest bucket the alert went to."""
    closed: str | None = None
    """How the alert was closed at the source (classification: reason)."""
    containment: str | None = None
    alert_update: AlertUpdate | None = None

    @property
    def failures(self) -> list[str]:
        return [f"{d.channel}: {d.detail}" for d in self.deliveries if not d.delivered]


class Response:
    """What one alert's response goes through: the plan and its blocks (loaded once per run,
    when ``blocks`` is shared by a batch)."""

    def __init__(self, plan: Plan, blocks: BlockCache | None = None) -> None:
        self.plan = plan
        self.blocks = blocks or BlockCache()
        self.defender = self.blocks.load(DefenderCredentials, plan.defender_block)

    def ticketing(self, action: PlannedAction) -> TicketingCredentials:
        name = ticketing_block_name(action.ticket, self.plan.ticketing_block)
        if name is None:  # the policy loader refuses a ticket playbook without a ticket target
            raise ValueError(f"rule {action.rule!r} names no ticket system")
        return self.blocks.load(TicketingCredentials, name)

    def channels(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        if not wanted:
            return ()
        override = self.plan.channel_blocks
        return wanted if override is None else override


# --- the playbooks, as plain functions over the shared tasks -------------------------------


def _reason(state: object) -> str:
    message = getattr(state, "message", None) or "failed"
    return str(message)[:300]


def _send(
    response: Response,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    ticket: Ticket,
    subject: str,
) -> list[Delivery]:
    deliveries = []
    for name in response.channels(outcome.notify):
        try:
            channel = load_channel(name)
        except Exception as exc:  # a missing block must not hide the other channels
            deliveries.append(Delivery(channel=name, delivered=False, detail=str(exc)[:300]))
            continue
        state = notify(channel, alert, ticket, action.templates, subject=subject, return_state=True)
        if state.is_completed():
            deliveries.append(state.result())
        else:
            deliveries.append(Delivery(channel=name, delivered=False, detail=_reason(state)))
    return deliveries


def _joined(outcome: Outcome) -> str:
    """Why an alert joined a ticket that another alert's response opened at the same moment."""
    if outcome.key_values:
        same = ", ".join(f"{k}={v}" for k, v in outcome.key_values.items())
        return f"same {same} as the alert that opened it (rule {outcome.rule})"
    if outcome.group_key and outcome.group_key.startswith("riposte-incident-"):
        return f"same Defender incident as the alert that opened it (rule {outcome.rule})"
    return f"same group as the alert that opened it (rule {outcome.rule})"


def run_ticket_and_notify(
    response: Response,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    open_tickets: dict[str, Ticket],
) -> ActionResult:
    """Find-or-create the outcome's ticket and notify its channels, or add the alert to the
    open ticket as a numbered note; then mark the alert in progress with a link to the ticket.
    A failed message is reported in the result; the alert is updated all the same."""
    ticketing = response.ticketing(action)
    result = ActionResult(
        rule=outcome.rule,
        playbook=str(outcome.playbook),
        disposition=str(outcome.disposition),
        reason=outcome.reason,
    )
    if outcome.disposition == Disposition.TICKET and outcome.ticket_correlation_key:
        opened = open_ticket(
            ticketing, alert, action, outcome.ticket_correlation_key, outcome.group_key
        )
        ticket = opened.ticket
        if opened.opened_by == alert.correlation_key:
            result.ticket_created = ticket.created
            result.deliveries = _send(
                response, alert, action, outcome, ticket, opened.correlation_key
            )
        else:
            # Another alert's response opened this ticket a moment before (both decided at
            # once): this alert joins it as a note, and the channels heard of it already.
            note = comment_on_ticket(ticketing, alert, ticket, _joined(outcome), action.templates)
            result.disposition = str(Disposition.COMMENT)
            result.alert_number = note.alert_number
    elif outcome.disposition == Disposition.COMMENT and outcome.ticket is not None:
        found = open_tickets.get(outcome.ticket.correlation_key)
        if found is None:  # decided from a ledger that could not show the ticket: look again
            project = ticket_place(action.ticket, ticketing)["project"]
            found = ticketing.get_client().find(outcome.ticket.correlation_key, project=project)
            if found is None:
                raise LookupError(f"ticket {outcome.ticket.key} of {outcome.rule} is gone")
        ticket = found
        note = comment_on_ticket(ticketing, alert, ticket, outcome.reason, action.templates)
        result.alert_number = note.alert_number
    else:
        raise ValueError(f"{outcome.playbook} cannot carry out a {outcome.disposition} outcome")
    result.ticket = ticket
    result.alert_update = update_alert(response.defender, alert, ticket)
    return result


def request_containment(
    response: Response, alert: Alert, action: PlannedAction, ticket: Ticket | None
) -> str:
    """Start the `contain_alert` run of the rule's containment (one per ticket and set of
    actions): it asks the approvers, waits, and contains only on a yes (or when the policy says
    automatic). Returns what happened, for the run report."""
    plan = action.containment
    if plan is None:
        return "none (the rule names no containment actions)"
    try:
        actions = plan_actions(alert, plan.actions, comment=f"Riposte, policy rule {action.rule}")
    except ContainmentPlanError as exc:
        return f"not possible: {exc}"
    if not actions:
        return "nothing to contain: the alert names no target for " + ", ".join(plan.actions)
    request = ContainmentRequest(
        alert=ref_for(alert),
        alert_title=alert.title,
        severity=str(alert.severity),
        rule=action.rule,
        actions=tuple(actions),
        approvers=tuple(
            ApproverRef(name=a.name, channels=a.channels, address=a.address) for a in plan.approvers
        ),
        timeout_seconds=int(plan.timeout.total_seconds()),
        on_timeout=plan.on_timeout,
        timeout_channels=plan.timeout_channels,
        automatic=plan.automatic,
        defender_block=response.plan.defender_block,
        ticketing_block=ticketing_block_name(action.ticket, response.plan.ticketing_block),
        ticket=ticket,
    )
    run_id = start_containment(request)
    if plan.automatic:
        return f"started without approval (policy says automatic): run {run_id}"
    names = ", ".join(a.name for a in plan.approvers)
    return f"awaiting approval from {names}: run {run_id}"


def run_escalate(
    response: Response,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    open_tickets: dict[str, Ticket],
) -> ActionResult:
    """`ticket_and_notify` at high priority, paging the on-call channels as well (the policy
    adds them to the action's channels), then the containment seam."""
    result = run_ticket_and_notify(response, alert, action, outcome, open_tickets)
    result.containment = request_containment(response, alert, action, result.ticket)
    return result


def run_close_benign(
    response: Response,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    open_tickets: dict[str, Ticket],
) -> ActionResult:
    """Close the alert at its source as benign or a false positive, with the rule's reason."""
    if action.close is None:  # the policy loader refuses close_benign without `close`
        raise ValueError(f"rule {action.rule!r}: close_benign needs a reason")
    closure = close_alert(
        response.defender, alert, action.close.classification, action.close.reason
    )
    return ActionResult(
        rule=outcome.rule,
        playbook=str(outcome.playbook),
        disposition=str(outcome.disposition),
        reason=outcome.reason,
        closed=f"{closure.classification}: {closure.reason}",
    )


def run_digest(
    response: Response,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    open_tickets: dict[str, Ticket],
) -> ActionResult:
    """Record the alert in its digest bucket; the scheduled digest flow posts the summary."""
    if outcome.digest is None:
        raise ValueError(f"rule {action.rule!r}: the digest playbook needs a digest bucket")
    bucket = add_to_digest(alert, outcome.digest, outcome.rule)
    return ActionResult(
        rule=outcome.rule,
        playbook=str(outcome.playbook),
        disposition=str(outcome.disposition),
        reason=outcome.reason,
        digest=bucket.key,
    )


PlaybookSteps = Callable[[Response, Alert, PlannedAction, Outcome, dict[str, Ticket]], ActionResult]

STEPS: dict[Playbook, PlaybookSteps] = {
    Playbook.TICKET_AND_NOTIFY: run_ticket_and_notify,
    Playbook.ESCALATE: run_escalate,
    Playbook.CLOSE_BENIGN: run_close_benign,
    Playbook.DIGEST: run_digest,
}

_RESPONDED = (Disposition.TICKET, Disposition.COMMENT, Disposition.DIGEST, Disposition.CLOSE)


def carry_out(
    response: Response,
    alert: Alert,
    action: PlannedAction,
    outcome: Outcome,
    open_tickets: dict[str, Ticket] | None = None,
) -> ActionResult:
    """Do what ``outcome`` says with the playbook's steps; a suppressed or ignored alert is
    only recorded. A response made starts the rule's suppression window."""
    if outcome.disposition not in _RESPONDED:
        return ActionResult(
            rule=outcome.rule,
            playbook=str(outcome.playbook),
            disposition=str(outcome.disposition),
            reason=outcome.reason,
        )
    result = STEPS[outcome.playbook](response, alert, action, outcome, open_tickets or {})
    if outcome.suppress_key:
        record_response(alert, outcome.suppress_key, outcome.at)
    return result


# --- each playbook as a flow of its own, for one alert -------------------------------------


def manual_action(
    policy: Policy, alert: Alert, playbook: Playbook, close: Close | None = None
) -> PlannedAction:
    """The action ``playbook`` takes for ``alert`` when a person asks for it: the parameters of
    the policy's rule if it picks this playbook for the alert, else the policy's defaults;
    never throttled, grouped, suppressed or allowlisted."""
    chosen = next((a for a in evaluate(policy, alert).actions if a.playbook == playbook), None)
    if chosen is None or (close is not None and chosen.close != close):
        manual = policy.model_copy(
            update={
                "rules": (),
                "allow": None,
                "fallback": Fallback(playbook=playbook, close=close),
            }
        )
        chosen = evaluate(manual, alert).final
    return chosen.model_copy(
        update={"throttle": None, "group_by_incident": False, "suppress": None, "allowlisted": None}
    )


def _run_alone(
    playbook: Playbook,
    alert_id: str,
    source: str,
    plan: Plan,
    close: Close | None = None,
) -> ActionResult:
    logger = get_run_logger()
    response = Response(plan)
    alert = fetch_alert(response.defender, source, alert_id)
    snapshot = current_policy(logger)
    action = manual_action(snapshot.policy, alert, playbook, close)
    if playbook == Playbook.CLOSE_BENIGN and action.close is None:
        raise ValueError("close_benign needs a reason: pass `reason` (the policy gives none)")
    if playbook == Playbook.DIGEST and action.digest is None:
        raise ValueError("the policy names no digest channel (`defaults.digest`)")
    outcome = gate(
        action, alert, at=alert.created_at, tickets=NoTickets(), suppressions=NoSuppressions()
    )
    result = STEPS[playbook](response, alert, action, outcome, {})
    logger.info("%s for %s-%s: %s", playbook, source, alert_id, result.disposition)
    if result.failures:
        raise NotificationsFailed("messages not sent: " + "; ".join(result.failures))
    return result


def _plan(
    defender_block: str, ticketing_block: str | None, channel_blocks: list[str] | None
) -> Plan:
    return Plan(
        defender_block=defender_block,
        ticketing_block=ticketing_block,
        channel_blocks=tuple(channel_blocks) if channel_blocks is not None else None,
    )


@flow(
    name="ticket_and_notify",
    flow_run_name="ticket_and_notify-{source}-{alert_id}",
    persist_result=True,
    result_storage=get_settings().result_storage_block,
)
def ticket_and_notify(
    alert_id: str,
    source: str = "graph",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> ActionResult:
    """Open (or find) the alert's own ticket, post it to the channels, mark the alert in
    progress. Blocks default to what the policy names for the alert."""
    plan = _plan(defender_block, ticketing_block, channel_blocks)
    return _run_alone(Playbook.TICKET_AND_NOTIFY, alert_id, source, plan)


@flow(
    name="escalate",
    flow_run_name="escalate-{source}-{alert_id}",
    persist_result=True,
    result_storage=get_settings().result_storage_block,
)
def escalate(
    alert_id: str,
    source: str = "graph",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str | None = None,
    channel_blocks: list[str] | None = None,
) -> ActionResult:
    """A high-priority ticket for the alert, posted to the channels and paged to the policy's
    on-call channels; approval and containment arrive in their own issue."""
    plan = _plan(defender_block, ticketing_block, channel_blocks)
    return _run_alone(Playbook.ESCALATE, alert_id, source, plan)


@flow(
    name="close_benign",
    flow_run_name="close_benign-{source}-{alert_id}",
    persist_result=True,
    result_storage=get_settings().result_storage_block,
)
def close_benign(
    alert_id: str,
    source: str = "graph",
    reason: str | None = None,
    classification: Literal["benign", "false_positive"] = "benign",
    defender_block: str = DEFAULT_DEFENDER,
) -> ActionResult:
    """Close the alert at its source as benign (or a false positive) with ``reason``; without
    one, the reason of the policy's close_benign rule for the alert."""
    close = Close(classification=classification, reason=reason) if reason else None
    plan = _plan(defender_block, None, None)
    return _run_alone(Playbook.CLOSE_BENIGN, alert_id, source, plan, close)


@flow(
    name="digest",
    flow_run_name="digest-{source}-{alert_id}",
    persist_result=True,
    result_storage=get_settings().result_storage_block,
)
def digest(
    alert_id: str,
    source: str = "graph",
    defender_block: str = DEFAULT_DEFENDER,
) -> ActionResult:
    """Put the alert in the digest the policy names for it (its rule's, else the default
    one); the scheduled `post_digests` flow posts it with its period's summary."""
    plan = _plan(defender_block, None, None)
    return _run_alone(Playbook.DIGEST, alert_id, source, plan)
