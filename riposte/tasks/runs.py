"""Tasks that talk to Prefect itself: start responses, keep the poll watermark, tag runs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
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
) -> list[RunRequest]:
    """The runs that answer ``refs``: one `respond_to_alert` run each when they are few, batches
    of `respond_batch` when they are many (a burst). Duplicates of one alert revision are
    dropped; both kinds of run de-duplicate through their idempotency keys."""
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
                idempotency_key=f"respond:{ref.key}",
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
                idempotency_key=f"batch:{digest}",
            )
        )
    return requests


@task(retries=2, retry_delay_seconds=[2, 10])
def start_responses(refs: list[AlertRef]) -> list[str]:
    """Create (or find, by idempotency key) the runs that answer ``refs``; return their ids."""
    ids = []
    for request in plan_runs(refs):
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


@task
def answered_alerts(source: str, alert_ids: list[str]) -> set[str]:
    """The alerts among ``alert_ids`` that some run has started to answer: a `respond_to_alert`
    run named after the alert, or a batch whose task runs are named after it."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        TaskRunFilter,
        TaskRunFilterName,
    )

    seen: set[str] = set()
    with get_client(sync_client=True) as client:
        # 50 alerts a query: up to 4 runs each is 200, the most the Prefect API answers at once
        # (a larger limit is refused with 422, which failed reconcile beyond 50 open alerts).
        for start in range(0, len(alert_ids), 50):
            chunk = alert_ids[start : start + 50]
            names = {f"{source}-{alert_id}": alert_id for alert_id in chunk}
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=list(names))),
                limit=len(chunk) * 4,
            )
            seen.update(names[r.name] for r in runs if r.name in names)
            fetches = {f"fetch {name}": alert_id for name, alert_id in names.items()}
            task_runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=list(fetches))),
                limit=len(chunk) * 4,
            )
            seen.update(fetches[t.name] for t in task_runs if t.name in fetches)
    return seen
