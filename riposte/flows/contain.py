"""Containment behind human approval: `contain_alert`, and the `expire_approvals` sweep.

`escalate` starts one `contain_alert` run per containment request (a ticket, or an alert, and a
set of actions). Unless the policy says `automatic`, the run sends every approver their own
signed links and suspends itself (no process waits meanwhile) for a typed `ApprovalInput`. A
link resumes it through the intake with a proof; the Prefect UI form resumes it without one,
and the audit says so. When nobody answers in time, `expire_approvals` resumes it with the
policy's default outcome. Then the actions run (each once, whatever the retries), and every
step lands in a table artifact and as a comment on the alert and the ticket; the response run
that asked is shown the outcome (an artifact of its own, linking this run).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
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
from riposte.alerts.plain import code_span, log_text
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
    run_page,
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


@dataclass
class Told:
    """Whether the response run that asked was shown the outcome of the actions."""

    done: bool = False


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
        return _contain(request, run_id, response_run, told)
    except Exception as exc:
        if told.done:
            # The actions' outcome, with the audit, is on the response run already (a failed
            # action, or a comment or note that failed after them): not overwritten.
            raise
        _tell_response_run(
            request,
            run_id,
            response_run,
            "FAILED",
            f"The containment run failed before it finished: {type(exc).__name__}: {exc}",
            [],
        )
        raise


def _contain(
    request: ContainmentRequest, run_id: UUID, response_run: UUID | None, told: Told
) -> State[Any]:
    logger = get_run_logger()
    defender, ticketing, alert = _subject(request)
    rows: list[AuditRow] = []
    if request.automatic:
        decided = _automatic(request)
    else:
        if not request.approvers:
            raise ValueError(f"rule {request.rule!r} names no approvers and is not automatic")
        # Prefect runs a resumed flow again from its start: the answer is there already.
        answer = _answer_given(run_id)
        deadline = _ask_approvers(request, run_id, rows, quiet=answer is not None)
        if answer is None:
            logger.info(
                "Waiting up to %d s for a decision on: %s",
                request.timeout_seconds,
                log_text(request.describe()),
            )
            answer = suspend_flow_run(
                wait_for_input=_approval_form(request, deadline),
                # Suspended until no later than the links' deadline (whole seconds, rounded
                # down) plus the margin the sweep subtracts: the sweep acts once every link has
                # expired.
                timeout=max(0, int((deadline - datetime.now(UTC)).total_seconds()))
                + SWEEP_MARGIN_SECONDS,
                key=PAUSE_KEY,
            )
        decided = judge(answer, request, run_id, load_approval_keys())
        logger.info(
            "Resumed: %s. (A resumed run starts again from the top: the approval requests "
            "above came back from before the suspension, nothing was sent again.)",
            log_text(decided.describe()),
        )
    return _carry_out(
        request, decided, rows, run_id, defender, ticketing, alert, response_run, told
    )


def _answer_given(run_id: UUID) -> ApprovalInput | None:
    """The answer this run was resumed with; None before it was suspended and answered.

    Read where Prefect keeps it, so that a resumed run does not call `suspend_flow_run` again
    (which would log "Suspending flow run" though it only reads the answer back)."""
    keyset = keyset_from_paused_state(Suspended(pause_key=PAUSE_KEY))
    given = read_flow_run_input(keyset["response"], flow_run_id=run_id)
    return ApprovalInput.model_validate(given) if given is not None else None


def _approval_form(request: ContainmentRequest, deadline: datetime) -> type[ApprovalInput]:
    """The Resume form of the suspended run: `ApprovalInput`'s fields, under a description
    of the request (the UI renders it as markdown)."""
    form = RunInput.subclass_from_base_model_type(ApprovalInput)
    return cast(
        type[ApprovalInput],
        form.with_initial_data(description=resume_description(request, deadline)),
    )


def _md(text: str, limit: int = 300, *, cell: bool = False) -> str:
    """``text`` shown as itself in markdown (`code_span`): a code span, on one line, control
    and bidirectional characters escaped, cut at ``limit``; in a table ``cell``, no pipe of it
    ends the cell."""
    return code_span(text, limit, cell=cell) or "``"


def _link(text: str, url: str) -> str:
    """A link of ours (a Prefect page, a ticket), or the address as text if not http(s)."""
    if not url.startswith(("https://", "http://")):
        return _md(url)
    return f"[{text}]({url.replace('(', '%28').replace(')', '%29').replace(' ', '%20')})"


def resume_description(request: ContainmentRequest, deadline: datetime) -> str:
    """What the Resume form of a suspended containment run says (markdown): the actions and
    their targets, the alert, the ticket, the approvers asked and the deadline. Alert text is
    shown as text (code spans), never as markup, links or mentions."""
    ref = request.alert
    lines = [
        "**Containment waiting for approval**",
        "",
        "Actions:",
        *(f"- {_md(a.describe())}" for a in request.actions[:20]),
    ]
    if len(request.actions) > 20:
        lines.append(f"- and {len(request.actions) - 20} more (see the run's parameters)")
    lines += [
        "",
        f"- Alert: {_md(ref.source, 40)} {_md(ref.alert_id, 120)}, "
        f"severity {_md(request.severity, 40)}",
        f"- Title: {_md(request.alert_title, 200)}",
        f"- Rule: {_md(request.rule, 120)}",
    ]
    if request.ticket is not None:
        ticket = request.ticket
        lines.append(
            f"- Ticket: {_md(ticket.system, 40)} {_md(ticket.key, 60)} {_link('open', ticket.url)}"
        )
    asked = ", ".join(
        f"{_md(a.name, 120)} ({', '.join(_md(c, 120) for c in a.channels) or 'no channel'})"
        for a in request.approvers
    )
    lines += [
        f"- Approvers asked, each by links of their own: {asked}",
        f"- Deadline: {_stamp(deadline)}; if nobody answers by then, the policy's default "
        f"outcome applies: **{request.on_timeout}**",
        "",
        "To decide here: `decision` approve runs the actions, reject does not; `reason` goes "
        "in the audit; `approver` is your name, recorded as typed and marked *identity not "
        "proven* (the Prefect UI does not say who you are). Leave `proof` empty: it is for "
        "approval links.",
    ]
    return "\n".join(lines)


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


def _ask_approvers(
    request: ContainmentRequest, run_id: UUID, rows: list[AuditRow], quiet: bool = False
) -> datetime:
    """Send each approver their links; the deadline of the links (a re-run gets the links
    sent before, cached, and their deadline). ``quiet``: the warnings were logged before (a
    resumed run)."""
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
        if not asked.reached and not quiet:
            logger.warning("No link reached %s: %s", log_text(asked.approver), log_text(sent))
    return deadline


def _carry_out(
    request: ContainmentRequest,
    decided: Decided,
    rows: list[AuditRow],
    run_id: UUID,
    defender: DefenderCredentials,
    ticketing: TicketingCredentials | None,
    alert: Alert,
    response_run: UUID | None = None,
    response_told: Told | None = None,
) -> State[Any]:
    """Act on the decision: contain on approve, and audit it on the run, the alert, the
    ticket and the response run that asked. ``response_told`` records that the response run
    was told the outcome (before the comment and the note, which may fail after the
    actions)."""
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
    logger.info("Containment %s", log_text(decided.describe()))
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
    outcome = _outcome(decided, executed, failed)
    create_table_artifact(
        key=artifact_key(request),
        table=[row.model_dump() for row in rows],
        description=_artifact_description(request, f"audit ({outcome})"),
    )
    # The response run that asked is told first: a comment or note that fails next leaves it
    # the actions' outcome, not "failed before it finished".
    _tell_response_run(request, run_id, response_run, outcome, summary, rows)
    if response_told is not None:
        response_told.done = True
    marker = audit_marker(request, f"{run_id}")
    comment_alert(defender, alert, summary, marker)
    if ticketing is not None and request.ticket is not None:
        note_ticket(ticketing, request.ticket, summary, marker)
    # Prefect logs the run's final state, message included, as a log row: defanged.
    if failed:
        raise ContainmentFailed(log_text(summary))
    report = ContainmentReport(
        request=request.key,
        decision=decided.decision,
        approver=decided.approver,
        via=decided.via,
        executed=executed,
        failed=failed,
    )
    return Completed(message=log_text(summary)[:1000], data=report)


def _outcome(decided: Decided, executed: list[str], failed: list[str]) -> str:
    """The outcome in a few words: approved and done, rejected, no answer in time..."""
    if decided.via == "automatic":
        verdict = "contained without approval (policy says automatic)"
    else:
        verdict = "approved" if decided.decision == "approve" else "rejected"
        if decided.via == "timeout":
            verdict = f"no answer in time: {verdict} by the policy's default"
    if decided.decision != "approve":
        return f"{verdict}, nothing executed"
    if failed:
        return f"{verdict}, FAILED ({len(failed)} of {len(executed) + len(failed)} actions)"
    return f"{verdict}, done"


def artifact_key(request: ContainmentRequest, prefix: str = "containment") -> str:
    """``<prefix>-<source>-<alert id>-<8 hex>``, as Prefect takes keys (lowercase letters,
    digits, dashes). The hex, of the request's key, keeps apart the requests that share an
    alert (or a ticket): several rules, or several sets of actions, each its own artifact."""
    name = f"{prefix}-{request.alert.source}-{request.alert.alert_id}".lower()
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", name)).strip("-")
    return f"{slug[:110].rstrip('-')}-{hashlib.sha256(request.key.encode()).hexdigest()[:8]}"


def _artifact_description(request: ContainmentRequest, what: str) -> str:
    """An artifact's description (rendered as markdown): the alert, its title as text."""
    ref = request.alert
    return (
        f"Containment of {_md(ref.source, 40)} alert {_md(ref.alert_id, 120)}: {what}. "
        f"Alert: {_md(request.alert_title, 150)}"
    )[:500]


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
                    description=_artifact_description(request, outcome),
                    data=outcome_markdown(request, run_id, outcome, summary, rows),
                    flow_run_id=response_run,
                )
            )
    except Exception as exc:
        get_run_logger().warning(
            "The outcome was not shown on the response run %s: %s", response_run, log_text(exc)
        )


def outcome_markdown(
    request: ContainmentRequest, run_id: UUID, outcome: str, summary: str, rows: list[AuditRow]
) -> str:
    """The containment's outcome as the response run that asked shows it (markdown): the
    alert's text and the audit's as text, the containment run's page the one link."""
    ref = request.alert
    page = run_page(run_id)
    lines = [
        f"# Containment of {_md(ref.source, 40)} alert {_md(ref.alert_id, 120)}: {outcome}",
        "",
        f"Alert: {_md(request.alert_title, 200)}",
        "",
        f"Outcome: {_md(summary, 2000)}",
    ]
    if rows:
        # The audit's rows, narrower than the containment run's table (its times are there).
        lines += ["", "| what | who | result |", "|---|---|---|"]
        lines += [
            f"| {_md(r.what, 300, cell=True)} | {_md(r.who, 200, cell=True)} "
            f"| {_md(r.result, 500, cell=True)} |"
            for r in rows
        ]
    if page:
        lines += ["", f"{_link('Open the containment run', page)}: its audit and its logs."]
    return "\n".join(lines)


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
                logger.info("Run %s: %s", log_text(run.name), log_text(exc))
                continue
            logger.info(
                "Run %s: nobody answered; applied %s", log_text(run.name), request.on_timeout
            )
            expired.append(str(run.id))
    return expired
