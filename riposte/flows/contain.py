"""Containment behind human approval: `contain_alert`, and the `expire_approvals` sweep.

`escalate` starts one `contain_alert` run per containment request (a ticket, or an alert, and a
set of actions). Unless the policy says `automatic`, the run sends every approver their own
signed links and suspends itself (no process waits meanwhile) for a typed `ApprovalInput`. A
link resumes it through the intake with a proof; the Prefect UI form resumes it without one,
and the audit says so. When nobody answers in time, `expire_approvals` resumes it with the
policy's default outcome. Then the actions run (each once, whatever the retries), and every
step lands in a table artifact and as a comment on the alert and the ticket.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from prefect.states import Completed, State
from pydantic import BaseModel, ConfigDict

from riposte.alerts.approval import (
    ApprovalInput,
    ApprovalKeys,
    ContainmentRequest,
    Decision,
    LinkError,
    Via,
    verify_proof,
)
from riposte.alerts.model import Alert
from riposte.blocks import BlockCache, DefenderCredentials, TicketingCredentials
from riposte.blocks.approval import aload_approval_keys, load_approval_keys
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
from riposte.tasks.decisions import AlreadyDecided, NotWaiting, decide

# Prefect's own pause timeout is this much longer than the policy's: the sweep applies the
# policy's default outcome first; Prefect fails the run only if the sweep was down for a day.
SWEEP_MARGIN_SECONDS = 86400
PAUSE_KEY = "approval"


class Decided(BaseModel):
    """The decision the run acts on, and how far it can be trusted."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    approver: str
    via: Via | Literal["staging"]
    reason: str
    at: datetime

    def describe(self) -> str:
        how = {
            "staging": "as the staging run was told (riposte replay --stage --approve)",
            "link": "by signed link",
            "timeout": "by the policy's default outcome (nobody answered in time)",
            "automatic": "automatically (the policy says so)",
            "ui": "in the Prefect UI form",
        }[self.via]
        verb = "approved" if self.decision == "approve" else "rejected"
        why = f": {self.reason}" if self.reason else ""
        return f"{verb} by {self.approver} {how}{why}"


class AuditRow(BaseModel):
    at: str
    who: str
    what: str
    parameters: str
    result: str


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


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@flow(
    name="contain_alert",
    persist_result=True,
    # Resumed on whichever worker picks it up: its steps must come back from shared storage.
    result_storage=get_settings().result_storage_block,
)
def contain_alert(request: ContainmentRequest) -> State[Any]:
    """Ask for approval (unless automatic), then contain, and audit every step."""
    logger = get_run_logger()
    run_id = UUID(str(flow_run.get_id()))
    defender, ticketing, alert = _subject(request)
    rows: list[AuditRow] = []
    if request.automatic:
        decided = _automatic(request)
    else:
        if not request.approvers:
            raise ValueError(f"rule {request.rule!r} names no approvers and is not automatic")
        deadline = _ask_approvers(request, run_id, rows)
        logger.info(
            "Waiting up to %d s for a decision on: %s", request.timeout_seconds, request.describe()
        )
        answer = suspend_flow_run(
            wait_for_input=ApprovalInput,
            # Suspended until no later than the links' deadline (whole seconds, rounded down)
            # plus the margin the sweep subtracts: the sweep acts once every link has expired.
            timeout=max(0, int((deadline - datetime.now(UTC)).total_seconds()))
            + SWEEP_MARGIN_SECONDS,
            key=PAUSE_KEY,
        )
        decided = judge(answer, request, run_id, load_approval_keys())
    return _carry_out(request, decided, rows, run_id, defender, ticketing, alert)


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


def _automatic(request: ContainmentRequest) -> Decided:
    return Decided(
        decision="approve",
        approver="policy",
        via="automatic",
        reason=f"rule {request.rule} runs containment without approval",
        at=datetime.now(UTC),
    )


def _ask_approvers(request: ContainmentRequest, run_id: UUID, rows: list[AuditRow]) -> datetime:
    """Send each approver their links; the deadline of the links (a re-run gets the links
    sent before, cached, and their deadline)."""
    logger = get_run_logger()
    params = "; ".join(a.describe() for a in request.actions)
    deadline = approval_deadline(request)
    for approver in request.approvers:
        asked = request_approval(request, approver, run_id, deadline)
        deadline = min(deadline, asked.expires)
        sent = ", ".join(
            d.channel if d.delivered else f"{d.channel} FAILED: {d.detail}"
            for d in asked.deliveries
        )
        rows.append(
            AuditRow(
                at=_stamp(asked.expires - timedelta(seconds=request.timeout_seconds)),
                who="riposte",
                what=f"asked {asked.approver} for approval",
                parameters=params,
                result=f"links sent ({sent or 'no channel'}); valid until {_stamp(asked.expires)}",
            )
        )
        if not asked.reached:
            logger.warning("No link reached %s: %s", asked.approver, sent)
    return deadline


def _carry_out(
    request: ContainmentRequest,
    decided: Decided,
    rows: list[AuditRow],
    run_id: UUID,
    defender: DefenderCredentials,
    ticketing: TicketingCredentials | None,
    alert: Alert,
) -> State[Any]:
    """Act on the decision: contain on approve, and audit it on the run, the alert and the
    ticket."""
    logger = get_run_logger()
    params = "; ".join(a.describe() for a in request.actions)
    rows.append(
        AuditRow(
            at=_stamp(decided.at),
            who=decided.approver,
            what=decided.decision,
            parameters=params,
            result=decided.describe(),
        )
    )
    logger.info("Containment %s", decided.describe())
    if decided.via == "timeout":
        for channel in request.timeout_channels:
            try:
                notify_timeout(request, run_id, channel)
                told = "told"
            except Exception as exc:
                told = f"NOT told: {str(exc)[:200]}"
            rows.append(
                AuditRow(
                    at=_stamp(datetime.now(UTC)),
                    who="riposte",
                    what=f"escalated the missed approval to {channel}",
                    parameters=params,
                    result=told,
                )
            )

    executed: list[str] = []
    failed: list[str] = []
    if decided.decision == "approve":
        for action in request.actions:
            started = datetime.now(UTC)
            try:
                outcome = execute_action(defender, alert, action)
                result = f"succeeded: {outcome.detail}" if outcome.detail else "succeeded"
                executed.append(action.describe())
            except ContainmentFailed as exc:  # its message names the action and the target
                result = f"FAILED: {exc}"
                failed.append(str(exc))
            except Exception as exc:  # an outage that outlasted the retries
                result = f"FAILED: {str(exc)[:300] or type(exc).__name__}"
                failed.append(f"{action.describe()}: {result[8:]}")
            rows.append(
                AuditRow(
                    at=_stamp(started),
                    who="riposte",
                    what=action.describe(),
                    parameters=action.model_dump_json(include={"kind", "target", "parameters"}),
                    result=result,
                )
            )

    summary = _summary(request, decided, executed, failed)
    create_table_artifact(
        key=f"containment-{request.params[:16]}",
        table=[row.model_dump() for row in rows],
        description=f"Containment audit: {summary}"[:500],
    )
    marker = audit_marker(request, f"{run_id}")
    comment_alert(defender, alert, summary, marker)
    if ticketing is not None and request.ticket is not None:
        note_ticket(ticketing, request.ticket, summary, marker)
    if failed:
        raise ContainmentFailed(summary)
    report = ContainmentReport(
        request=request.key,
        decision=decided.decision,
        approver=decided.approver,
        via=decided.via,
        executed=executed,
        failed=failed,
    )
    return Completed(message=summary[:1000], data=report)


def _summary(
    request: ContainmentRequest, decided: Decided, executed: list[str], failed: list[str]
) -> str:
    parts = [f"Containment ({request.describe()}) {decided.describe()}."]
    if decided.decision == "approve":
        if executed:
            parts.append("Done: " + "; ".join(executed) + ".")
        if failed:
            parts.append("FAILED: " + "; ".join(failed) + ".")
    else:
        parts.append("Nothing was executed.")
    return " ".join(parts)


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
    run_id = UUID(str(flow_run.get_id()))
    defender, ticketing, alert = _subject(request)
    rows: list[AuditRow] = []
    if request.automatic:
        decided = _automatic(request)
    else:
        _ask_approvers(request, run_id, rows)
        decided = Decided(
            decision="approve" if approve else "reject",
            approver="riposte replay --stage",
            via="staging",
            reason=f"--approve {'all' if approve else 'none'}",
            at=datetime.now(UTC),
        )
    return _carry_out(request, decided, rows, run_id, defender, ticketing, alert)


# --- the timeout sweep -----------------------------------------------------------------------


@flow(name="expire_approvals")
async def expire_approvals() -> list[str]:
    """Apply the policy's default outcome to every approval nobody answered in time."""
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
                await decide(
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
                logger.info("Run %s: %s", run.name, exc)
                continue
            logger.info("Run %s: nobody answered; applied %s", run.name, request.on_timeout)
            expired.append(str(run.id))
    return expired
