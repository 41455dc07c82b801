"""Tasks that talk to Prefect itself: start responses, keep the poll watermark, tag runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast
from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.variables import Variable

from riposte.alerts.model import Alert


def response_key(source: str, alert_id: str) -> str:
    """Idempotency key of an alert's response: posting it twice returns the same flow run."""
    return f"respond:{source}:{alert_id}"


def response_run_name(source: str, alert_id: str) -> str:
    return f"{source}-{alert_id}"


def response_tags(alert: Alert) -> list[str]:
    return ["riposte", f"source:{alert.source}", f"severity:{alert.severity}"]


@task(retries=2, retry_delay_seconds=[2, 10])
def start_response(alert: Alert, deployment: str) -> str:
    """Start (or find, by idempotency key) the response run for an alert; return its id."""
    run = cast(
        FlowRun,
        run_deployment(
            deployment,
            parameters={"source": alert.source, "alert_id": alert.id},
            flow_run_name=response_run_name(alert.source, alert.id),
            tags=response_tags(alert),
            idempotency_key=response_key(alert.source, alert.id),
            timeout=0,
            as_subflow=False,
        ),
    )
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
