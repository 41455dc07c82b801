"""The responder: a long-lived process that runs Riposte's deployments in-process.

`prefect serve` and the `process` worker start a new Python process for every flow run (about
two seconds and 80 MB before the flow's first line), which is most of a single alert's latency.
The responder registers the same deployments, claims their scheduled runs through the Prefect
API (a run is proposed Pending; only one claimant is accepted, so several responders can share
the work) and runs each in a thread of this process. Runs, states, logs, retries and the UI are
Prefect's as usual; UI Retry puts a run back to Scheduled and the responder picks it up again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import Pause
from prefect.flow_engine import run_flow
from prefect.states import Pending, Scheduled

logger = logging.getLogger("riposte.responder")


class Responder:
    READY_SECONDS = 10.0
    RELEASE_SECONDS = 600.0

    def __init__(
        self,
        deployments: list[tuple[RunnerDeployment, Flow[Any, Any]]],
        *,
        limit: int = 8,
        poll_seconds: float = 0.25,
    ) -> None:
        self.deployments = deployments
        self.limit = limit
        self.poll_seconds = poll_seconds
        self._flows: dict[UUID, Flow[Any, Any]] = {}
        self._running: dict[UUID, Future[None]] = {}
        self._stop = threading.Event()
        self._ready_at = -self.READY_SECONDS

    def register(self) -> list[UUID]:
        for deployment, flow in self.deployments:
            deployment_id = cast(UUID, deployment.apply())
            self._flows[deployment_id] = flow
        return list(self._flows)

    def stop(self, *_: object) -> None:
        self._stop.set()

    def serve(self) -> None:
        """Register the deployments, then claim and run their scheduled runs until stopped."""
        self.register()
        logger.info(
            "Responder running %d deployments, %d runs at once", len(self._flows), self.limit
        )
        with (
            ThreadPoolExecutor(self.limit, thread_name_prefix="run") as pool,
            get_client(sync_client=True) as client,
        ):
            while not self._stop.is_set():
                self._running = {k: f for k, f in self._running.items() if not f.done()}
                free = self.limit - len(self._running)
                if free > 0:
                    for run in self._scheduled(client, free):
                        if run.id in self._running or not self._claim(client, run):
                            continue
                        logger.info("Running %s (%s)", run.name, run.id)
                        self._running[run.id] = pool.submit(self._execute, run)
                self._stop.wait(self.poll_seconds)
            logger.info("Stopping: waiting for %d running flow runs", len(self._running))

    def _scheduled(self, client: Any, limit: int) -> list[FlowRun]:
        """Runs of our deployments that are due, oldest first.

        A plain filtered read: Prefect's runner endpoint also schedules a "deployments ready"
        job on the server at every call, too much at several polls a second, so it is called
        only every `READY_SECONDS` to keep the deployments shown as Ready.
        """
        now = datetime.now(UTC)
        try:
            if time.monotonic() - self._ready_at >= self.READY_SECONDS:
                client.get_scheduled_flow_runs_for_deployments(
                    deployment_ids=list(self._flows), scheduled_before=now, limit=1
                )
                self._ready_at = time.monotonic()
            runs: list[FlowRun] = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=list(self._flows)),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    ),
                    next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                        before_=now + timedelta(seconds=0.1)
                    ),
                ),
                sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC,
                limit=limit,
            )
        except Exception as exc:  # the server restarting: keep trying
            logger.warning("Cannot read scheduled runs: %s", type(exc).__name__)
            return []
        return runs

    def _claim(self, client: Any, run: FlowRun) -> bool:
        try:
            result = client.set_flow_run_state(run.id, Pending())
        except Exception as exc:
            logger.warning("Cannot claim run %s: %s", run.id, type(exc).__name__)
            return False
        # REJECT / ABORT / WAIT: another responder has it, or a concurrency limit holds it back.
        if result.status.value != "ACCEPT":
            logger.info("Not claimed %s: %s", run.id, result.status.value)
            return False
        return True

    def _execute(self, run: FlowRun) -> None:
        assert run.deployment_id is not None
        flow = self._flows[run.deployment_id]
        try:
            with get_client(sync_client=True) as client:
                current = client.read_flow_run(run.id)
            state = run_flow(
                flow, flow_run=current, parameters=current.parameters, return_type="state"
            )
            if inspect.isawaitable(state):
                # An async flow (the approval sweep): run_flow hands back its coroutine. Never
                # awaited, the run stayed Pending for ever, holding its deployment's only slot.
                asyncio.run(state)  # type: ignore[arg-type]
        except Pause:
            # Suspended for input (an approval): Prefect reschedules it when it is resumed.
            logger.info("Flow run %s is suspended until it is resumed", run.id)
        except BaseException:  # the run's own state records the failure; keep serving
            logger.exception("Flow run %s ended with an error", run.id)
            self._release(run.id)

    def _release(self, run_id: UUID) -> None:
        """Put a run claimed but never started back to Scheduled, so that it runs again.

        When Prefect goes away between the claim and the start (a restart), the engine cannot
        read or start the run: it stays Pending, and nothing else would ever pick it up. This
        waits for Prefect (up to `RELEASE_SECONDS`, with backoff) and reschedules it; a run the
        engine did start has left Pending and is left alone.
        """
        deadline = time.monotonic() + self.RELEASE_SECONDS
        wait = 1.0
        while True:
            try:
                with get_client(sync_client=True) as client:
                    current = client.read_flow_run(run_id)
                    if current.state is None or current.state.type != StateType.PENDING:
                        return
                    client.set_flow_run_state(run_id, Scheduled(), force=True)
                logger.warning("Flow run %s never started: scheduled again", run_id)
                return
            except Exception as exc:
                if time.monotonic() + wait > deadline:
                    logger.error(
                        "Flow run %s may be left Pending: Prefect unreachable (%s)",
                        run_id,
                        type(exc).__name__,
                    )
                    return
                self._stop.wait(wait)
                wait = min(wait * 2, 15.0)


def serve_forever(responder: Responder) -> None:
    """Serve until SIGTERM or Ctrl-C, then let the running flow runs finish."""
    signal.signal(signal.SIGTERM, responder.stop)
    signal.signal(signal.SIGINT, responder.stop)
    responder.serve()
