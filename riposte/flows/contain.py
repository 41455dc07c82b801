"""Containment behind human approval: `contain_alert`, and the `expire_approvals` sweep.

`escalate` starts one `contain_alert` run per containment request (a ticket, or an alert, and a
set of actions). Unless the policy says `automatic`, the run sends every approver their own
signed links and suspends itself (no process waits meanwhile) for a typed `ApprovalInput`. A
link resumes it through the intake with a proof; the Prefect UI form resumes it without one,
and the audit says so. When nobody answers in time, `expire_approvals` resumes it with the
policy's default outcome. Then the actions run (each once, whatever the retries), and every
step lands in a table artifact and as a comment on the alert and the ticket; the response run
that asked is shown the outcome (an artifact of its own, linking this run).

What the run shows people (its audit, the Resume form, the outcome) is written in
`riposte.flows.contain_audit`. The rest stays here, over 500 lines: the flow, its staging twin
and the sweep that resumes it share its steps, its pause key and its sweep margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import suspend_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import RunInput, keyset_from_paused_state
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from prefect.states import Completed, State, Suspended
from pydantic import BaseModel

from riposte.alerts.approval import (
    ApprovalInput,
    ApprovalKeys,
    ContainmentRequest,
    LinkError,
    verify_proof,
)
from riposte.alerts.model import Alert
from riposte.alerts.plain import log_text
from riposte.blocks import BlockCache, DefenderCredentials, TicketingCredentials
from riposte.blocks.signing_keys import aload_approval_keys, load_approval_keys
from riposte.flows._common import stored_flow
from riposte.flows.approval_decision import AlreadyDecided, NotWaiting, record_decision
from riposte.flows.contain_audit import (
    Audit,
    AuditRow,
    Decided,
    artifact_description,
    artifact_key,
    outcome_markdown,
    outcome_of,
    resume_description,
    stamp,
    summary_of,
)
from riposte.settings import CONTAIN_DEPLOYMENT, get_settings
from riposte.tasks.alerts import fetch_alert
from riposte.tasks.approvals import (
    approval_deadline,
    audit_marker,
    comment_alert,
    note_ticket,
    notify_timeout,
    request_approval,
)
from riposte.tasks.containment import ContainmentFailed, execute_action
from riposte.tasks.runs import APPROVAL_SWEEP_DELAY, book_approval_sweep

# Prefect's own pause timeout is this much longer than the policy's: the sweep applies the
# policy's default outcome first; Prefect fails the run only if the sweep was down for a day.
SWEEP_MARGIN_SECONDS = 86400
PAUSE_KEY = "approval"
# A sweep due this soon may run before the run is suspended: another is booked after it.
LATE_BOOKING_MARGIN = timedelta(seconds=2)

__all__ = [
    "AuditRow",
    "ContainmentReport",
    "Decided",
    "artifact_key",
    "contain_alert",
    "expire_approvals",
    "judge",
    "outcome_markdown",
    "resume_description",
    "stage_containment",
]


@dataclass
class Told:
    """Whether the response run that asked was shown the outcome of the actions."""

    done: bool = False


@dataclass
class ContainmentRun:
    """What one containment run acts on and writes to: the blocks its request names, the
    alert as it is now, and the run's audit so far."""

    request: ContainmentRequest
    run_id: UUID
    defender: DefenderCredentials
    ticketing: TicketingCredentials | None
    alert: Alert
    audit: Audit


class ContainmentReport(BaseModel):
    request: str
    decision: str
    approver: str
    via: str
    executed: list[str]
    failed: list[str]


def judge(
    answer: ApprovalInput, request: ContainmentRequest, run_id: UUID, keys: ApprovalKeys
) -> Decided:
    """The decision as far as it is proven: a verified proof names the approver; anything
    else came through the Prefect UI and is recorded with the name as typed, unproven."""
    now = datetime.now(UTC)
    proof = None
    if answer.proof:
        try:
            proof = verify_proof(keys, answer.proof)
        except LinkError:
            proof = None
    if (
        proof is not None
        and proof.run == run_id
        and proof.params == request.params
        and proof.decision == answer.decision
        and proof.approver == answer.approver
    ):
        return Decided(
            decision=proof.decision,
            approver=proof.approver,
            via=proof.via,
            reason=answer.reason,
            at=proof.at,
        )
    typed = answer.approver.strip() or "someone"
    note = " (a proof was given but does not verify)" if answer.proof else ""
    return Decided(
        decision=answer.decision,
        approver=f"{typed} (identity not proven){note}",
        via="ui",
        reason=answer.reason,
        at=now,
    )


# Resumed on whichever worker picks it up: its steps must come back from shared storage.
@stored_flow("contain_alert")
def contain_alert(request: ContainmentRequest, response_run: UUID | None = None) -> State[Any]:
    """Ask for approval (unless automatic), then contain, and audit every step. The outcome
    is shown on ``response_run`` too, the response run that asked, once decided and done.

    Args:
        request: The containment to ask for, as the escalate playbook made it from the policy:
            the alert, the actions and their targets, the approvers, the timeout and its
            default outcome. Started by a response, not typed by hand.
        response_run: The id of the response run that asked, which is told the outcome; empty:
            none is told.
    """
    run_id = UUID(str(flow_run.get_id()))
    told = Told()
    try:
        run = _begin(request, run_id)
        decided = _automatic(request) if request.automatic else _await_decision(run)
        return _carry_out(run, decided, response_run, told)
    except Exception as exc:
        # Once told, the response run shows the actions' outcome with the audit (a failed
        # action, or a comment or note that failed after them): not overwritten.
        if not told.done:
            _tell_response_run(
                request,
                run_id,
                response_run,
                "FAILED",
                f"The containment run failed before it finished: {type(exc).__name__}: {exc}",
                [],
            )
        raise


# --- the steps, in the order the run takes them ----------------------------------------------


def _subject(
    request: ContainmentRequest,
) -> tuple[DefenderCredentials, TicketingCredentials | None, Alert]:
    """The blocks the request names, and the alert as it is now."""
    blocks = BlockCache()
    defender = blocks.load(DefenderCredentials, request.defender_block)
    ticketing = (
        blocks.load(TicketingCredentials, request.ticketing_block)
        if request.ticketing_block
        else None
    )
    return defender, ticketing, fetch_alert(defender, request.alert.source, request.alert.alert_id)


def _begin(request: ContainmentRequest, run_id: UUID) -> ContainmentRun:
    """The run's subject (`_subject`), its audit empty."""
    defender, ticketing, alert = _subject(request)
    return ContainmentRun(request, run_id, defender, ticketing, alert, Audit(request))


def _automatic(request: ContainmentRequest) -> Decided:
    return Decided(
        decision="approve",
        approver="policy",
        via="automatic",
        reason=f"rule {request.rule} runs containment without approval",
        at=datetime.now(UTC),
    )


def _await_decision(run: ContainmentRun) -> Decided:
    """Ask the approvers, suspend the run until someone answers, and judge the answer.

    Prefect runs a resumed flow again from its start: the answer is there already, and the
    approval requests come back Cached from before the suspension (nothing is sent again)."""
    request, run_id = run.request, run.run_id
    if not request.approvers:
        raise ValueError(f"rule {request.rule!r} names no approvers and is not automatic")
    answer = _answer_given(run_id)
    deadline = _ask_approvers(run, quiet=answer is not None)
    if answer is None:
        answer = _suspend_for_answer(request, deadline, run_id)
    decided = judge(answer, request, run_id, load_approval_keys())
    get_run_logger().info(
        "Resumed: %s. (A resumed run starts again from the top: the approval requests "
        "above came back from before the suspension, nothing was sent again.)",
        log_text(decided.describe()),
    )
    return decided


def _answer_given(run_id: UUID) -> ApprovalInput | None:
    """The answer this run was resumed with; None before it was suspended and answered.

    Read where Prefect keeps it, so that a resumed run does not call `suspend_flow_run` again
    (which would log "Suspending flow run" though it only reads the answer back)."""
    keyset = keyset_from_paused_state(Suspended(pause_key=PAUSE_KEY))
    given = read_flow_run_input(keyset["response"], flow_run_id=run_id)
    return ApprovalInput.model_validate(given) if given is not None else None


def _ask_approvers(run: ContainmentRun, quiet: bool = False) -> datetime:
    """Send each approver their links; the deadline of the links (a re-run gets the links
    sent before, cached, and their deadline). ``quiet``: the warnings were logged before (a
    resumed run)."""
    logger = get_run_logger()
    request = run.request
    deadline = approval_deadline(request)
    for approver in request.approvers:
        asked = request_approval(request, approver, run.run_id, deadline)
        deadline = min(deadline, asked.expires)
        sent = ", ".join(
            d.channel if d.delivered else f"{d.channel} FAILED: {d.detail}"
            for d in asked.deliveries
        )
        run.audit.add(
            asked.expires - timedelta(seconds=request.timeout_seconds),
            "riposte",
            f"asked {asked.approver} for approval",
            f"links sent ({sent or 'no channel'}); valid until {stamp(asked.expires)}",
        )
        if not asked.reached and not quiet:
            logger.warning("No link reached %s: %s", log_text(asked.approver), log_text(sent))
    return deadline


def _suspend_for_answer(
    request: ContainmentRequest, deadline: datetime, run_id: UUID
) -> ApprovalInput:
    """Suspend the run (no process waits meanwhile) until its Resume form is answered: by a
    link through the intake, the Prefect UI form, or the sweep.

    The sweep booked when the links were sent runs just after their deadline. When sending
    them took about that long (a slow channel, a short timeout), that sweep may run before
    this run is suspended, find nothing to do, and leave the default outcome to the sweep's
    rare schedule: another sweep is booked then, for just after the suspension."""
    now = datetime.now(UTC)
    if deadline + APPROVAL_SWEEP_DELAY <= now + LATE_BOOKING_MARGIN:
        book_approval_sweep(run_id, max(deadline, now))
    get_run_logger().info(
        "Waiting up to %d s for a decision on: %s",
        request.timeout_seconds,
        log_text(request.describe()),
    )
    return suspend_flow_run(
        wait_for_input=_approval_form(request, deadline),
        # Suspended until no later than the links' deadline (whole seconds, rounded down) plus
        # the margin the sweep subtracts: the sweep acts once every link has expired.
        timeout=max(0, int((deadline - datetime.now(UTC)).total_seconds())) + SWEEP_MARGIN_SECONDS,
        key=PAUSE_KEY,
    )


def _approval_form(request: ContainmentRequest, deadline: datetime) -> type[ApprovalInput]:
    """The Resume form of the suspended run: `ApprovalInput`'s fields, under a description
    of the request (the UI renders it as markdown)."""
    form = RunInput.subclass_from_base_model_type(ApprovalInput)
    return cast(
        type[ApprovalInput],
        form.with_initial_data(description=resume_description(request, deadline)),
    )


def _carry_out(
    run: ContainmentRun,
    decided: Decided,
    response_run: UUID | None = None,
    response_told: Told | None = None,
) -> State[Any]:
    """Act on the decision: contain on approve, and audit it on the run, the alert, the
    ticket and the response run that asked. ``response_told`` records that the response run
    was told the outcome (before the comment and the note, which may fail after the
    actions)."""
    request = run.request
    run.audit.decision(decided)
    get_run_logger().info("Containment %s", log_text(decided.describe()))
    if decided.via == "timeout":
        _escalate_missed_approval(run)
    executed, failed = _execute(run) if decided.decision == "approve" else ([], [])
    text = summary_of(request, decided, executed, failed)
    _publish_audit(run, outcome_of(decided, executed, failed), text, response_run, response_told)
    # Prefect logs the run's final state, message included, as a log row: defanged.
    if failed:
        raise ContainmentFailed(log_text(text))
    report = ContainmentReport(
        request=request.key,
        decision=decided.decision,
        approver=decided.approver,
        via=decided.via,
        executed=executed,
        failed=failed,
    )
    return Completed(message=log_text(text)[:1000], data=report)


def _escalate_missed_approval(run: ContainmentRun) -> None:
    """Tell the policy's timeout channels that nobody answered; a channel that fails is a row
    of the audit, not a reason to stop."""
    request = run.request
    for channel in request.timeout_channels:
        try:
            notify_timeout(request, run.run_id, channel)
            told = "told"
        except Exception as exc:
            told = f"NOT told: {str(exc)[:200]}"
        run.audit.add(
            datetime.now(UTC), "riposte", f"escalated the missed approval to {channel}", told
        )


def _execute(run: ContainmentRun) -> tuple[list[str], list[str]]:
    """Run the approved actions, each once, in order, each a row of the audit; what was done,
    and what failed (each failure naming its action and why)."""
    executed: list[str] = []
    failed: list[str] = []
    for action in run.request.actions:
        started = datetime.now(UTC)
        try:
            done = execute_action(run.defender, run.alert, action)
            result = f"succeeded: {done.detail}" if done.detail else "succeeded"
            executed.append(action.describe())
        except ContainmentFailed as exc:  # its message names the action and the target
            result = f"FAILED: {exc}"
            failed.append(str(exc))
        except Exception as exc:  # an outage that outlasted the retries
            why = str(exc)[:300] or type(exc).__name__
            result = f"FAILED: {why}"
            failed.append(f"{action.describe()}: {why}")
        run.audit.add(
            started,
            "riposte",
            action.describe(),
            result,
            parameters=action.model_dump_json(include={"kind", "target", "parameters"}),
        )
    return executed, failed


def _publish_audit(
    run: ContainmentRun,
    outcome: str,
    text: str,
    response_run: UUID | None,
    response_told: Told | None,
) -> None:
    """The audit as the run's table artifact, then on the response run that asked, then as a
    comment on the alert and a note on the ticket (each written once)."""
    request, rows = run.request, run.audit.rows
    create_table_artifact(
        key=artifact_key(request),
        table=[row.model_dump() for row in rows],
        description=artifact_description(request, f"audit ({outcome})"),
    )
    # The response run that asked is told first: a comment or note that fails next leaves it
    # the actions' outcome, not "failed before it finished".
    _tell_response_run(request, run.run_id, response_run, outcome, text, rows)
    if response_told is not None:
        response_told.done = True
    marker = audit_marker(request, f"{run.run_id}")
    comment_alert(run.defender, run.alert, text, marker)
    if run.ticketing is not None and request.ticket is not None:
        note_ticket(run.ticketing, request.ticket, text, marker)


def _tell_response_run(
    request: ContainmentRequest,
    run_id: UUID,
    response_run: UUID | None,
    outcome: str,
    summary: str,
    rows: list[AuditRow],
) -> None:
    """Show the outcome on the response run that asked (an artifact of that run, linking this
    one), so its page says how the containment ended. A failure to do so is logged, never
    raised: the containment is done."""
    if response_run is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.create_artifact(
                ArtifactCreate(
                    key=artifact_key(request, "containment-outcome"),
                    type="markdown",
                    description=artifact_description(request, outcome),
                    data=outcome_markdown(request, run_id, outcome, summary, rows),
                    flow_run_id=response_run,
                )
            )
    except Exception as exc:
        get_run_logger().warning(
            "The outcome was not shown on the response run %s: %s", response_run, log_text(exc)
        )


# --- staging --------------------------------------------------------------------------------


@flow(name="stage_containment", persist_result=True)
def stage_containment(request: ContainmentRequest, approve: bool) -> State[Any]:
    """Staging only (`riposte replay --stage`): ask the approvers as `contain_alert` does (the
    messages and links are real, in the sandbox), then act at once on the staging's standing
    answer (``approve``) instead of waiting; automatic containment runs as in production."""
    api = str(PREFECT_API_URL.value() or "")
    if not get_settings().staging or not api.startswith("http://127.0.0.1:"):
        raise RuntimeError(
            "stage_containment runs only in a staging run (riposte replay --stage), on its "
            "own Prefect server on this machine"
        )
    run = _begin(request, UUID(str(flow_run.get_id())))
    if request.automatic:
        decided = _automatic(request)
    else:
        _ask_approvers(run)
        decided = Decided(
            decision="approve" if approve else "reject",
            approver="riposte replay --stage",
            via="staging",
            reason=f"--approve {'all' if approve else 'none'}",
            at=datetime.now(UTC),
        )
    return _carry_out(run, decided)


# --- the timeout sweep -----------------------------------------------------------------------


@flow(name="expire_approvals", flow_run_name="approval-sweep")
async def expire_approvals() -> list[str]:
    """Apply the policy's default outcome to every approval nobody answered in time. Runs at
    each approval's deadline (booked when its links are sent) and on a rare schedule, as a
    safety net; it takes no parameters."""
    logger = get_run_logger()
    expired: list[str] = []
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(CONTAIN_DEPLOYMENT)
        except Exception:
            logger.info("No %s deployment: nothing to sweep", CONTAIN_DEPLOYMENT)
            return expired
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
            limit=200,
        )
        if not runs:
            return expired
        keys = await aload_approval_keys()
        now = datetime.now(UTC)
        for run in runs:
            timeout = run.state.state_details.pause_timeout if run.state else None
            if timeout is None:
                continue
            deadline = cast(datetime, timeout) - timedelta(seconds=SWEEP_MARGIN_SECONDS)
            if now < deadline:
                continue
            request = ContainmentRequest.model_validate(run.parameters["request"])
            try:
                await record_decision(
                    client,
                    keys,
                    run.id,
                    params=request.params,
                    decision=request.on_timeout,
                    approver="nobody",
                    via="timeout",
                    reason=f"no answer within {request.timeout_seconds} s",
                )
            except (AlreadyDecided, NotWaiting) as exc:
                logger.info("Run %s: %s", log_text(run.name), log_text(exc))
                continue
            logger.info(
                "Run %s: nobody answered; applied %s", log_text(run.name), request.on_timeout
            )
            expired.append(str(run.id))
    return expired
