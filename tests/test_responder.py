"""The responder puts back to Scheduled a run it claimed but could not start, and only such a run.

On the session's Prefect server; the runs belong to no deployment, so no responder takes them.
"""

from __future__ import annotations

from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Pending, Running

from riposte.deployments.responder import Responder


@flow(name="responder-release-probe")
def probe() -> None:
    """Never run: its runs are only created and moved between states."""


def _run_in(state_type: StateType) -> UUID:
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, state=Pending())
        if state_type == StateType.RUNNING:
            client.set_flow_run_state(run.id, Running(), force=True)
        return run.id


def _state(run_id: UUID) -> StateType | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type if state else None


def test_a_claimed_run_that_never_started_is_scheduled_again(prefect_server: str) -> None:
    run_id = _run_in(StateType.PENDING)
    assert _state(run_id) == StateType.PENDING
    Responder([])._release(run_id)
    assert _state(run_id) == StateType.SCHEDULED


def test_a_run_that_started_is_left_alone(prefect_server: str) -> None:
    run_id = _run_in(StateType.RUNNING)
    Responder([])._release(run_id)
    assert _state(run_id) == StateType.RUNNING
