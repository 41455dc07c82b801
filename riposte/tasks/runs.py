"""Tasks that talk to Prefect itself: start responses, keep the poll watermark, tag runs."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.variables import Variable
from pydantic import BaseModel

from riposte.alerts.model import Alert
from riposte.alerts.response import AlertRef
from riposte.settings import BATCH_DEPLOYMENT, RESPOND_DEPLOYMENT

# Up to this many alerts at once get one run each; more are a burst and go in batches.
SINGLE_RUN_LIMIT = 20
BATCH_SIZE = 100
# The table artifact a batch writes, one row per alert (`respond_batch`).
BATCH_TABLE_KEY = "response-batch"


class RunRequest(BaseModel):
    """One flow run to create for a set of alerts (one alert, or a batch)."""

    deployment: str
    name: str
    parameters: dict[str, Any]
    tags: list[str]
    idempotency_key: str


def response_tags(alert: Alert) -> list[str]:
    return ["riposte", f"source:{alert.source}", f"severity:{alert.severity}"]


def plan_runs(
    refs: list[AlertRef],
    *,
    single_limit: int = SINGLE_RUN_LIMIT,
    batch_size: int = BATCH_SIZE,
    attempt: int = 0,
) -> list[RunRequest]:
    """The runs that answer ``refs``: one `respond_to_alert` run each when they are few, batches
    of `respond_batch` when they are many (a burst). Duplicates of one alert revision are
    dropped; both kinds of run de-duplicate through their idempotency keys. ``attempt`` > 0
    answers again alerts whose earlier responses failed: a key of its own, or Prefect would
    hand back the failed run."""
    again = f":again-{attempt}" if attempt else ""
    unique = list({ref.key: ref for ref in refs}.values())
    if len(unique) <= single_limit:
        return [
            RunRequest(
                deployment=RESPOND_DEPLOYMENT,
                name=f"{ref.source}-{ref.alert_id}",
                parameters={
                    "source": ref.source,
                    "alert_id": ref.alert_id,
                    "revision": ref.revision,
                },
                tags=["riposte", f"source:{ref.source}", f"severity:{ref.revision.split('-')[0]}"],
                idempotency_key=f"respond:{ref.key}{again}",
            )
            for ref in unique
        ]
    requests = []
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        digest = hashlib.sha256("\n".join(sorted(r.key for r in chunk)).encode()).hexdigest()
        sources = sorted({r.source for r in chunk})
        requests.append(
            RunRequest(
                deployment=BATCH_DEPLOYMENT,
                name=f"batch-{chunk[0].source}-{chunk[0].alert_id}-{len(chunk)}",
                parameters={
                    "alerts": [r.model_dump() for r in chunk],
                    "first_alert": f"{chunk[0].source}-{chunk[0].alert_id}",
                    "size": len(chunk),
                },
                tags=["riposte", "batch", *(f"source:{s}" for s in sources)],
                idempotency_key=f"batch:{digest}{again}",
            )
        )
    return requests


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
    `fetch <source>-<id>` task run (a batch). A run that is still going, completed or was
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
            fetches = {f"fetch {name}": alert_id for name, alert_id in names.items()}
            for t in client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=list(fetches))),
                limit=len(chunk) * 4,
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
