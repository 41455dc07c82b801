"""Tasks that talk to Prefect itself: start responses, keep the poll watermark, tag runs."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.variables import Variable
from pydantic import BaseModel

from riposte.alerts.model import Alert
from riposte.alerts.response import AlertRef
from riposte.alerts.run_plan import SINGLE_RUN_LIMIT, plan_runs
from riposte.settings import (
    APPROVAL_SWEEP_DEPLOYMENT,
    get_settings,
)

# The table artifact a batch writes, one row per alert (`respond_batch`).
BATCH_TABLE_KEY = "response-batch"


def response_tags(alert: Alert) -> list[str]:
    return ["riposte", f"source:{alert.source}", f"severity:{alert.severity}"]


@task(retries=2, retry_delay_seconds=[2, 10])
def start_responses(
    refs: list[AlertRef], attempt: int = 0, *, single_limit: int = SINGLE_RUN_LIMIT
) -> list[str]:
    """Create (or find, by idempotency key) the runs that answer ``refs``; return their ids.
    ``single_limit``: at most this many alerts get a run each, more go in batches."""
    ids = []
    for request in plan_runs(refs, single_limit=single_limit, attempt=attempt):
        run = cast(
            FlowRun,
            run_deployment(
                request.deployment,
                parameters=request.parameters,
                flow_run_name=request.name,
                tags=request.tags,
                idempotency_key=request.idempotency_key,
                timeout=0,
                as_subflow=False,
            ),
        )
        ids.append(str(run.id))
    return ids


def _run_parameters() -> dict[str, Any]:
    """The running flow run's parameters, with the flow's defaults for those not given."""
    given = dict(flow_run.parameters or {})
    context = FlowRunContext.get()
    if context is None or context.flow is None:
        return given
    defaults = {
        name: p.default
        for name, p in inspect.signature(context.flow.fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **given}


def alert_run_name(template: str) -> Callable[[], str]:
    """The `flow_run_name` of a flow run for one alert (an ``alert_id`` parameter): ``template``
    filled with the run's parameters (`{source}-{alert_id}`), as the intake, the poll and
    reconcile name runs; or the name the run was given if it is that name followed by a space
    and more, as a person may type it in the Custom run form (`graph-<id> after the policy
    change`). So the random name the UI's form suggests is replaced. A name that merely holds
    the id is not kept: alert `123` typed as `graph-1234` would be taken for alert 1234's run,
    which reconcile finds by its exact name."""

    def name() -> str:
        default = template.format(**_run_parameters())
        given = flow_run.name or ""
        if given == default or given.startswith(default + " "):
            return given
        return default

    return name


def batch_run_name() -> str:
    """The `flow_run_name` of a `respond_batch` run: `batch-<first alert>-<size>`, from its
    ``first_alert`` and ``size`` parameters, or from its alerts when they are left empty."""
    parameters = _run_parameters()
    alerts = list(parameters.get("alerts") or [])
    first = str(parameters.get("first_alert") or "")
    if not first and alerts:
        ref = AlertRef.model_validate(alerts[0])
        first = f"{ref.source}-{ref.alert_id}"
    return f"batch-{first}-{parameters.get('size') or len(alerts)}"


# After the deadline: every link has expired by then, on a machine whose clock is a little behind
# too.
APPROVAL_SWEEP_DELAY = timedelta(seconds=5)


def book_approval_sweep(contain_run: UUID, deadline: datetime) -> str | None:
    """Schedule a run of the approval sweep just after ``deadline``, once per containment run
    and deadline (idempotency key): the policy's default outcome applies on time, and no sweep
    runs while no approval is pending. Returns the sweep run's id.

    Never raises: a booking that failed (Prefect unreachable, no sweep deployment) is logged,
    and the sweep's own schedule (`RIPOSTE_APPROVAL_SWEEP_SECONDS`) applies the outcome later.
    Not in a staging run, whose approvals are answered at once."""
    if get_settings().staging:
        return None
    try:
        run = cast(
            FlowRun,
            run_deployment(
                APPROVAL_SWEEP_DEPLOYMENT,
                scheduled_time=deadline + APPROVAL_SWEEP_DELAY,
                flow_run_name=APPROVAL_SWEEP_DEPLOYMENT.partition("/")[2],
                idempotency_key=f"approval-sweep:{contain_run}:{deadline.isoformat()}",
                timeout=0,
                as_subflow=False,
            ),
        )
    except Exception as exc:
        try:
            logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
        except MissingContextError:
            logger = logging.getLogger(__name__)
        logger.warning(
            "The approval sweep was not booked for %s (%s): the sweep's schedule applies the "
            "default outcome instead, later",
            deadline.isoformat(),
            str(exc)[:200] or type(exc).__name__,
        )
        return None
    return str(run.id)


def watermark_name(source: str) -> str:
    return f"riposte-watermark-{source}"


@task
def read_watermark(source: str, lookback: timedelta) -> datetime:
    """Where the last poll stopped, or ``now - lookback`` on the very first poll."""
    value = Variable.get(watermark_name(source), default=None)
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return datetime.now(UTC) - lookback


@task
def advance_watermark(source: str, to: datetime) -> datetime:
    """Move the watermark forward, never back (two polls may finish out of order)."""
    current = Variable.get(watermark_name(source), default=None)
    if isinstance(current, str) and datetime.fromisoformat(current) >= to:
        return datetime.fromisoformat(current)
    Variable.set(watermark_name(source), to.isoformat(), overwrite=True)
    return to


def tag_current_run(tags: list[str]) -> None:
    """Add tags to the running flow run, so the UI can filter responses by them."""
    current_id = flow_run.get_id()
    if current_id is None:
        return
    run_id = UUID(current_id)
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        merged = sorted(set(current.tags) | set(tags))
        if merged != sorted(current.tags):
            client.update_flow_run(run_id, tags=merged)


class Attempts(BaseModel):
    """What the runs of one alert did: whether one answered it (or is answering it), and how
    many ended Failed or Crashed without answering it."""

    answered: bool = False
    failed: int = 0
    last_failure: str = ""


# Every other state has the alert in hand: still going, completed, or cancelled (by a person:
# a deliberate stop, not a failure to answer again).
_FAILED = {StateType.FAILED, StateType.CRASHED}


@task
def response_attempts(source: str, alert_ids: list[str]) -> dict[str, Attempts]:
    """For each of ``alert_ids``, what the runs that answered it did.

    A run answers an alert when it is a `respond_to_alert` run named after it, or has a
    `respond <source>-<id>` task run (a batch; `fetch <source>-<id>` in batches of earlier
    releases, whose steps were task runs each). A run that is still going, completed or was
    cancelled has it in hand. A single alert's run that ended Failed or Crashed counts as one
    failure; so does a failed batch for the alerts its table artifact lists as FAILED (a batch
    with no table, which crashed, for every alert it held). Alerts no run touched are absent.
    """
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterName,
        TaskRunFilter,
        TaskRunFilterName,
    )

    held: dict[UUID, set[str]] = {}
    runs: dict[UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        # 50 alerts a query: up to 4 runs each is 200, the most the Prefect API answers at once
        # (a larger limit is refused with 422).
        for start in range(0, len(alert_ids), 50):
            chunk = alert_ids[start : start + 50]
            names = {f"{source}-{alert_id}": alert_id for alert_id in chunk}
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=list(names))),
                limit=len(chunk) * 4,
            ):
                if r.name in names:
                    runs[r.id] = r
                    held.setdefault(r.id, set()).add(names[r.name])
            fetches = {
                f"{step} {name}": alert_id
                for name, alert_id in names.items()
                for step in ("respond", "fetch")
            }
            for t in client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=list(fetches))),
                limit=len(chunk) * 4,  # one of the two names per run
            ):
                if t.name in fetches and t.flow_run_id is not None:
                    held.setdefault(t.flow_run_id, set()).add(fetches[t.name])
        unread = [run_id for run_id in held if run_id not in runs]
        for start in range(0, len(unread), 200):
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=unread[start : start + 200])),
                limit=200,
            ):
                runs[r.id] = r
        attempts: dict[str, Attempts] = {}
        for run_id, alerts in held.items():
            run = runs.get(run_id)
            state = run.state if run else None
            if state is not None and state.type not in _FAILED:
                failed: set[str] = set()
            elif run is not None and run.name not in {f"{source}-{a}" for a in alerts}:
                failed = _failed_in_batch(client, run, source, alerts)
            else:
                failed = set(alerts)  # a single alert's run, or a run no longer found
            why = (state.message or state.name) if state is not None else "run not found"
            for alert_id in alerts:
                a = attempts.setdefault(alert_id, Attempts())
                if alert_id in failed:
                    a.failed += 1
                    a.last_failure = f"{run.name if run else run_id}: {why}"[:300]
                else:
                    a.answered = True
    return attempts


def _failed_in_batch(client: Any, run: FlowRun, source: str, alerts: set[str]) -> set[str]:
    """The alerts a failed or crashed batch did not answer, from its `response-batch` table
    (rows `{"alert": "<source>-<id>", "result": "answered" | "FAILED: ..."}`)."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            key=ArtifactFilterKey(any_=[BATCH_TABLE_KEY]),
        ),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    if not artifacts:
        return set(alerts)  # it ended before writing its table: nothing known answered
    data = artifacts[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    answered = {
        str(row.get("alert", "")).removeprefix(f"{source}-")
        for row in rows or []
        if isinstance(row, dict) and row.get("result") == "answered"
    }
    return set(alerts) - answered
