"""What Prefect and the workers' logs say about the scale test's flow runs, and its schedules.

Prefect's API answers for states, deployments and workers; a worker's log answers at once for
which runs it claimed and which of their steps it finished (the API records those later).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

from scale.processes import Proc

RESPONSE_DEPLOYMENTS = ("respond_to_alert/respond", "respond_batch/respond-batch")


def flow_run_states(run_id: str) -> list[tuple[str, float]]:
    """The run's states, oldest first, each with its time (epoch seconds)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(run_id))
    return [
        (s.name or s.type.value, s.timestamp.timestamp())
        for s in sorted(states, key=lambda s: s.timestamp)
    ]


def response_runs() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with get_client(sync_client=True) as client:
        ids = [client.read_deployment_by_name(name).id for name in RESPONSE_DEPLOYMENTS]
        runs: list[Any] = []
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=ids)),
                limit=200,
                offset=offset,
            )
            runs.extend(page)
            if len(page) < 200:
                return runs
            offset += 200


def pause_schedules() -> list[str]:
    """Pause the scheduled deployments and drop the runs they already scheduled: the burst and
    the recovery are what this test measures, not polls (bench does the same)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = []
    with get_client(sync_client=True) as client:
        scheduled = [d for d in client.read_deployments() if d.schedules]
        for deployment in scheduled:
            client.pause_deployment(deployment.id)
            paused.append(deployment.name)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[d.id for d in scheduled]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
                ),
            )
        )
        for run in runs:
            client.delete_flow_run(run.id)
    return paused


def online_workers() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool("riposte")
    return sum(1 for w in workers if str(w.status).upper().endswith("ONLINE"))


SUBMITTED = re.compile(r"submitting flow run '([0-9a-f-]{36})'")
ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")


def claimed_runs(log_path: Path) -> Counter[str]:
    """The flow runs a worker ran (how many times each), from its log: both workers try every
    scheduled run, and the one whose Pending the server refuses logs an aborted submission."""
    claimed: Counter[str] = Counter()
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return claimed
    for line in text.splitlines():
        if match := SUBMITTED.search(line):
            claimed[match.group(1)] += 1
        elif match := ABORTED.search(line):
            claimed[match.group(1)] -= 1
    return +claimed


TASK_FINISHED = re.compile(
    r"Task run '[^']* graph-(scale-[0-9a-f]{6}-\d{5})[^']*' - Finished in state (\w+)"
)
# A batch's alert is one task run whose steps are grouped in it: a step found done (its record
# in the shared result storage) is logged by name, as a Cached task run would be.
STEP_REUSED = re.compile(
    r"Task run '[^']* graph-(scale-[0-9a-f]{6}-\d{5})[^']*' - [^\n]*: done before, its result "
    r"reused"
)


def steps_in_log(log_path: Path, alert_ids: set[str]) -> Counter[str]:
    """How many steps of these alerts a worker finished, by final state (Completed, Cached...),
    from its log: immediate, where the API records task run states a few seconds later. In a
    batch, an alert's task run counts as one step Completed, and each of its steps found done
    as one Cached."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        text = log_path.read_text(errors="replace")
        for match in TASK_FINISHED.finditer(text):
            if match.group(1) in alert_ids:
                found[match.group(2)] += 1
        for match in STEP_REUSED.finditer(text):
            if match.group(1) in alert_ids:
                found["Cached"] += 1
    return found


def alerts_of(run: Any) -> set[str]:
    """The alert ids a response run answers, from its parameters."""
    params = run.parameters or {}
    if "alerts" in params:
        return {a["alert_id"] for a in params["alerts"]}
    return {params["alert_id"]} if "alert_id" in params else set()


def runs_in_flight(worker: Proc) -> dict[str, list[Any]]:
    """The worker's flow runs that are not finished, by state type."""
    from prefect.client.orchestration import get_client

    found: dict[str, list[Any]] = {}
    with get_client(sync_client=True) as client:
        for run_id in claimed_runs(worker.log_path):
            run = client.read_flow_run(UUID(run_id))
            if run.state is not None and not run.state.is_final():
                found.setdefault(run.state.type.value, []).append(run)
    return found


def choose_victim(workers: list[Proc], timeout: float) -> Proc:
    """The worker whose Running flow runs have finished the most steps, waiting (bounded) until
    some have: a run killed half-way shows that its finished steps come back Cached."""

    def progress(worker: Proc) -> int:
        running = runs_in_flight(worker).get("RUNNING", [])
        alerts = set().union(*(alerts_of(r) for r in running)) if running else set()
        return steps_in_log(worker.log_path, alerts)["Completed"]

    deadline = time.monotonic() + timeout
    while True:
        done = [(progress(w), w) for w in workers]
        steps, worker = max(done, key=lambda d: d[0])
        if steps > 0 or time.monotonic() >= deadline:
            return worker
        time.sleep(1)
