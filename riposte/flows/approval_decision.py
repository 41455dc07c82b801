"""Taking a decision on a paused containment run, once, whoever takes it (a link on any intake
replica, or the timeout sweep).

The decision is recorded as an input of the flow run itself under one key: Prefect refuses a
second input with the same key (409), so the first decision wins, atomically, without any state
in the intake. Then the run is resumed with the decision and a proof signed by Riposte.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import BaseModel, ConfigDict, ValidationError

from riposte.alerts.approval import ApprovalChoice, ApprovalKeys, DecisionProof, Via

DECISION_KEY = "riposte-decision"


class DecisionRecord(BaseModel):
    """Who decided what, when and how; kept on the flow run."""

    model_config = ConfigDict(frozen=True)

    decision: ApprovalChoice
    approver: str
    via: Via
    at: datetime
    reason: str = ""


class AlreadyDecided(Exception):
    def __init__(self, record: DecisionRecord | None) -> None:
        super().__init__("the decision was already taken")
        self.record = record


class NotWaiting(Exception):
    """The run is not paused for a decision (not yet, or any more)."""


async def read_decision(client: PrefectClient, run_id: UUID) -> DecisionRecord | None:
    try:
        value = await client.read_flow_run_input(run_id, DECISION_KEY)
    except ObjectNotFound:
        return None
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise
    try:
        return DecisionRecord.model_validate_json(value)
    except ValidationError:
        return None


def is_waiting(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_paused()


async def record_decision(
    client: PrefectClient,
    keys: ApprovalKeys,
    run_id: UUID,
    *,
    params: str,
    decision: ApprovalChoice,
    approver: str,
    via: Via,
    reason: str = "",
) -> DecisionRecord:
    """Record the decision (first one wins) and resume the run with a signed proof of it.

    Raises AlreadyDecided (with who and when, where known) or NotWaiting.
    """
    existing = await read_decision(client, run_id)
    if existing is not None:
        raise AlreadyDecided(existing)
    run = await client.read_flow_run(run_id)
    if not is_waiting(run):
        state = run.state.name if run.state else "unknown"
        raise NotWaiting(f"the run is not waiting for a decision (it is {state})")
    record = DecisionRecord(
        decision=decision, approver=approver, via=via, at=datetime.now(UTC), reason=reason
    )
    try:
        await client.create_flow_run_input(run_id, DECISION_KEY, record.model_dump_json())
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 409:
            raise AlreadyDecided(await read_decision(client, run_id)) from None
        raise
    proof = keys.sign(
        DecisionProof(
            run=run_id, params=params, decision=decision, approver=approver, via=via, at=record.at
        )
    )
    try:
        result = await client.resume_flow_run(
            run_id,
            run_input={
                "decision": decision,
                "reason": reason,
                "approver": approver,
                "proof": proof,
            },
        )
    except (httpx.HTTPError, PrefectHTTPStatusError, OSError):
        await _forget(client, run_id)
        raise
    if result.status != SetStateStatus.ACCEPT:
        await _forget(client, run_id)
        why = getattr(result.details, "reason", None) or str(result.status)
        raise NotWaiting(f"Prefect did not resume the run: {why}")
    return record


async def _forget(client: PrefectClient, run_id: UUID) -> None:
    """Undo the record of a decision that could not be delivered, so it can be taken again."""
    with contextlib.suppress(httpx.HTTPError, PrefectHTTPStatusError, OSError):
        await client.delete_flow_run_input(run_id, DECISION_KEY)
