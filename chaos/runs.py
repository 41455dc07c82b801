"""What Prefect says about the chaos scenarios' runs, and what an operator does to them.

Read through Prefect's client (runs, task runs, artifacts), and done as the design or an operator
would: the scheduled reconcile run now, `prefect flow-run retry`, a dead run marked Crashed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID


def read_runs(run_ids: Iterable[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = sorted(set(run_ids))
    runs: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 200):
            chunk = [UUID(i) for i in ids[start : start + 200]]
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            ):
                runs[str(run.id)] = run
    return runs


def wait_final(
    run_ids: Iterable[str],
    timeout: float,
    stall: float | None = None,
    progress: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Wait until every run is in a final state, for ``timeout`` seconds at most, or until
    neither the runs' states nor ``progress()`` (what the external systems hold) changed for
    ``stall`` seconds; return the runs as they are then."""
    ids = set(run_ids)
    deadline = time.monotonic() + timeout
    seen: Any = None
    changed = time.monotonic()
    while True:
        try:
            runs = read_runs(ids)
        except Exception:  # the server restarting: ask again
            runs = {}
        if len(runs) == len(ids) and all(r.state and r.state.is_final() for r in runs.values()):
            return runs
        now = time.monotonic()
        if now > deadline:
            return runs
        if stall is not None and runs:
            current = (
                sorted((i, state_name(r)) for i, r in runs.items()),
                progress() if progress else None,
            )
            if current != seen:
                seen, changed = current, now
            elif now - changed > stall:
                return runs
        time.sleep(1.0)


def state_name(run: Any) -> str:
    return str(run.state.name) if run is not None and run.state is not None else "unknown"


def artifacts_of(run_ids: Iterable[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    ids = sorted(UUID(i) for i in set(run_ids))
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 50):  # a few artifacts a run; 200 is the API's most
            found += client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=ids[start : start + 50])
                ),
                limit=200,
            )
    return found


def task_states(run_ids: Iterable[str], name_like: str) -> Counter[str]:
    """How many task runs named like ``name_like`` of these flow runs are in each state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    ids = sorted(UUID(i) for i in set(run_ids))
    states: Counter[str] = Counter()
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 20):
            offset = 0
            while True:
                page = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[start : start + 20])),
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name_like)),
                    limit=200,
                    offset=offset,
                )
                states.update(state_name(t) for t in page)
                if len(page) < 200:
                    break
                offset += 200
    return states


def run_reconcile(timeout: float) -> list[dict[str, Any]]:
    """Run `reconcile_alerts` now, as its schedule would; return its summaries."""
    from prefect.deployments import run_deployment

    from riposte.settings import RECONCILE_DEPLOYMENT

    run = run_deployment(
        RECONCILE_DEPLOYMENT, parameters={"sources": ["graph"]}, timeout=0, as_subflow=False
    )
    done = wait_final([str(run.id)], timeout)[str(run.id)]  # type: ignore[union-attr]
    if not (done.state and done.state.is_completed()):
        raise RuntimeError(f"reconcile_alerts ended {state_name(done)}: {done.state.message}")
    return [s.model_dump() for s in done.state.result()]


def response_runs_since(since: datetime) -> list[Any]:
    """Every respond / respond-batch run created since ``since`` (those reconcile started)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    with get_client(sync_client=True) as client:
        runs: list[Any] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
            ),
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["respond", "respond-batch"])
            ),
            limit=200,
        )
    return runs


def runs_holding(alert_ids: set[str], since: datetime) -> dict[str, str]:
    """Alert id -> the first respond / respond-batch run created since ``since`` that holds it,
    read from the runs' parameters: how an alert the intake answered `queued` (its run created
    later by the intake's forwarder) is found."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
                ),
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["respond", "respond-batch"])
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
                offset=offset,
            )
            for run in page:
                params = run.parameters or {}
                held = [a.get("alert_id") for a in params.get("alerts", [])] or [
                    params.get("alert_id")
                ]
                for alert_id in held:
                    if alert_id in alert_ids:
                        found.setdefault(alert_id, str(run.id))
            if len(page) < 200:
                return found
            offset += 200


def retry_run(prefect_cli: str, run_id: str) -> str:
    """`prefect flow-run retry <id>`, as an operator types it; return its output on success."""
    done = subprocess.run(
        [prefect_cli, "flow-run", "retry", run_id],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect flow-run retry {run_id}: {done.stdout}{done.stderr}".strip())
    return done.stdout


def mark_crashed(run_id: str, message: str) -> None:
    """What an operator does in the UI for a run whose process died: mark it Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)
