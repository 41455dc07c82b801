"""The Prefect UI as the analyst's console: every run form explains itself, responses are told
apart from housekeeping, and the approval sweep runs when an approval is due.

On the session's Prefect server, with the served deployments (`riposte serve`) and the sandbox.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args
from uuid import uuid4

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterTags,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from riposte.alerts.sources import SOURCES, SourceName
from riposte.settings import (
    APPROVAL_SWEEP_DEPLOYMENT,
    BATCH_DEPLOYMENT,
    DIGEST_DEPLOYMENT,
    HOUSEKEEPING_TAG,
    POLL_DEPLOYMENT,
    RECONCILE_DEPLOYMENT,
    RESPOND_DEPLOYMENT,
    RESPONSE_TAG,
    RESPONSES_VIEW,
    Settings,
)
from riposte.tasks.runs import APPROVAL_SWEEP_DELAY, book_approval_sweep
from tests.conftest import wait_until
from tests.test_playbook_e2e import _alerts, _assert_answered_once, _wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

HOUSEKEEPING = (POLL_DEPLOYMENT, RECONCILE_DEPLOYMENT, DIGEST_DEPLOYMENT, APPROVAL_SWEEP_DEPLOYMENT)


def test_the_source_names_of_the_run_forms_are_the_sources_riposte_reads() -> None:
    assert sorted(get_args(SourceName)) == sorted(SOURCES)


def _served() -> dict[str, dict[str, Any]]:
    """Every Riposte deployment on the server, by `flow/deployment` name, as the UI reads it."""
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["riposte"]))
        )
        flows = {f.id: f.name for f in client.read_flows()}
    return {
        f"{flows[d.flow_id]}/{d.name}": {
            "tags": d.tags,
            "schema": d.parameter_openapi_schema or {},
        }
        for d in found
    }


def test_every_served_run_form_explains_each_parameter_and_lists_the_sources() -> None:
    served = _served()
    assert {
        RESPOND_DEPLOYMENT,
        BATCH_DEPLOYMENT,
        *HOUSEKEEPING,
        "contain_alert/contain",
        "replay_alerts/replay",
        "run_playbook/ticket_and_notify",
    } <= set(served)
    sources = set(SOURCES)
    for name, deployment in served.items():
        properties = deployment["schema"].get("properties", {})
        for parameter, schema in properties.items():
            assert str(schema.get("description") or "").strip(), f"{name}: {parameter}"
        if "source" in properties:
            assert set(properties["source"]["enum"]) == sources, name
            assert properties["source"]["default"] == "graph", name
        if "sources" in properties:
            (listed,) = [s for s in properties["sources"]["anyOf"] if s.get("type") == "array"]
            assert set(listed["items"]["enum"]) == sources, name
    respond = served[RESPOND_DEPLOYMENT]["schema"]["properties"]
    assert [p for p, _ in sorted(respond.items(), key=lambda i: i[1]["position"])][:2] == [
        "alert_id",
        "source",
    ]
    assert respond["revision"]["description"].startswith("Leave empty")
    assert "for this run only" in " ".join(respond["ticketing_block"]["description"].split())
    batch = served[BATCH_DEPLOYMENT]["schema"]
    assert batch["properties"]["first_alert"]["description"].startswith("Only names the run")
    (ref,) = batch["definitions"].values()
    assert all(field.get("description") for field in ref["properties"].values())


def test_housekeeping_is_tagged_apart_from_responses_and_its_runs_are_named() -> None:
    served = _served()
    for name in HOUSEKEEPING:
        assert HOUSEKEEPING_TAG in served[name]["tags"], name
        assert RESPONSE_TAG not in served[name]["tags"], name
    for name in (RESPOND_DEPLOYMENT, BATCH_DEPLOYMENT):
        assert RESPONSE_TAG in served[name]["tags"], name
        assert HOUSEKEEPING_TAG not in served[name]["tags"], name

    run = run_deployment(APPROVAL_SWEEP_DEPLOYMENT, timeout=120, as_subflow=False)
    assert isinstance(run, FlowRun) and run.state is not None and run.state.is_completed()
    assert run.name == "approval-sweep"
    assert {"riposte", HOUSEKEEPING_TAG} <= set(run.tags)

    # The runs the server schedules ahead carry the tag too (and the UI's filter hides them).
    with get_client(sync_client=True) as client:
        sweep = client.read_deployment_by_name(APPROVAL_SWEEP_DEPLOYMENT)

        def scheduled() -> list[FlowRun]:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[sweep.id]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    ),
                )
            )
            # Not the runs booked for approvals' deadlines: those of the schedule.
            return [r for r in runs if "auto-scheduled" in r.tags]

        ahead = wait_until(scheduled, timeout=90, what="the sweep's scheduled runs")
    assert all(HOUSEKEEPING_TAG in r.tags for r in ahead), [r.tags for r in ahead]
    # A safety net, not a heartbeat: this session's interval (3600 s) keeps them few.
    assert len(ahead) <= 5, [r.expected_start_time for r in ahead]


def test_an_approval_books_one_sweep_run_for_its_deadline() -> None:
    contain_run = uuid4()
    deadline = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    booked = book_approval_sweep(contain_run, deadline)
    # A second approver of the same run (or a retried request) books nothing more.
    assert booked is not None and book_approval_sweep(contain_run, deadline) == booked
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(booked)  # type: ignore[arg-type]
    assert run.state is not None and run.state.type == StateType.SCHEDULED
    assert run.expected_start_time == deadline + APPROVAL_SWEEP_DELAY
    assert run.name == "approval-sweep"
    assert HOUSEKEEPING_TAG in run.tags
    # Nothing runs before the deadline; the responder runs it once it is due.
    done = _wait_final(booked, timeout=90)
    assert done.state is not None and done.state.is_completed(), done.state
    assert done.start_time is not None and done.start_time >= deadline


def test_a_sweep_that_cannot_be_booked_never_fails_the_approval_request() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert book_approval_sweep(uuid4(), datetime.now(UTC)) is None


def test_a_completed_alert_answered_again_from_the_custom_run_keeps_a_typed_name(
    sandbox: httpx.Client,
) -> None:
    (alert,) = _alerts(sandbox, 1, "console")
    # What the UI's Custom run form sends when its random suggested name is left as it is.
    first = run_deployment(
        RESPOND_DEPLOYMENT,
        parameters={"alert_id": alert["id"], "source": "graph"},
        flow_run_name="tidy-andromedae",
        timeout=0,
        as_subflow=False,
    )
    done = _wait_final(first.id)  # type: ignore[union-attr]
    assert done.state is not None and done.state.is_completed(), done.state
    assert done.name == f"graph-{alert['id']}"
    assert RESPONSE_TAG in done.tags

    # Answered again (a completed run has no Retry): a name typed as the run's name, a space
    # and more, is kept.
    typed = f"graph-{alert['id']} again after the policy change"
    again = run_deployment(
        RESPOND_DEPLOYMENT,
        parameters={"alert_id": alert["id"], "source": "graph"},
        flow_run_name=typed,
        timeout=0,
        as_subflow=False,
    )
    done_again = _wait_final(again.id)  # type: ignore[union-attr]
    assert done_again.state is not None and done_again.state.is_completed(), done_again.state
    assert done_again.name == typed
    _assert_answered_once(sandbox, [alert["id"]])


def test_a_typed_name_is_kept_only_if_it_is_the_alert_s_run_name_then_a_space(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reconcile finds an alert's runs by their exact name: a typed name that merely holds the
    id (alert `123` typed as `graph-1234`) would pass for another alert's run."""
    import riposte.tasks.runs as runs

    name = runs.alert_run_name("{source}-{alert_id}")
    playbook_name = runs.alert_run_name("escalate-{source}-{alert_id}")

    def named(given: str, alert_id: str = "123", template: Any = name) -> str:
        parameters = {"alert_id": alert_id, "source": "graph"}
        monkeypatch.setattr(runs, "flow_run", SimpleNamespace(name=given, parameters=parameters))
        result: str = template()
        return result

    assert named("tidy-andromedae") == "graph-123"  # the UI's random suggestion
    assert named("graph-123") == "graph-123"
    assert named("graph-123 after the policy change") == "graph-123 after the policy change"
    for merely_holding in ("graph-1234", "graph-1234 again", "graph-123x", "re graph-123", "123"):
        assert named(merely_holding) == "graph-123", merely_holding
    assert named("graph-1234", alert_id="1234") == "graph-1234"
    assert named("escalate-graph-123 by hand", template=playbook_name) == (
        "escalate-graph-123 by hand"
    )
    assert named("graph-123 by hand", template=playbook_name) == "escalate-graph-123"


def test_a_batch_started_by_hand_is_named_after_its_first_alert(sandbox: httpx.Client) -> None:
    (alert,) = _alerts(sandbox, 1, "console-batch")
    run = run_deployment(
        BATCH_DEPLOYMENT,
        parameters={"alerts": [{"source": "graph", "alert_id": alert["id"]}]},
        timeout=0,
        as_subflow=False,
    )
    done = _wait_final(run.id)  # type: ignore[union-attr]
    assert done.state is not None and done.state.is_completed(), done.state
    assert done.name == f"batch-graph-{alert['id']}-1"
    assert RESPONSE_TAG in done.tags


def test_the_local_stack_schedules_ten_minutes_ahead_not_an_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings.models.server.services import ServerServicesSchedulerSettings

    from riposte.deployments.stack import stack_env

    env = stack_env(Settings(home=Path(os.environ["RIPOSTE_HOME"])))
    for key, value in env.items():
        if key.startswith("PREFECT_SERVER_SERVICES_SCHEDULER_"):
            monkeypatch.setenv(key, value)
    # Read as the stack's Prefect server reads it: a misspelt name would leave the default.
    scheduler = ServerServicesSchedulerSettings()
    assert scheduler.min_scheduled_time == timedelta(minutes=10)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no headless Chromium at {CHROMIUM}")
def test_the_responses_view_of_the_prefect_ui_lists_responses_only(
    sandbox: httpx.Client, prefect_server: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    (alert,) = _alerts(sandbox, 1, "console-view")
    response = run_deployment(
        RESPOND_DEPLOYMENT, parameters={"alert_id": alert["id"]}, timeout=180, as_subflow=False
    )
    sweep = run_deployment(APPROVAL_SWEEP_DEPLOYMENT, timeout=120, as_subflow=False)
    assert isinstance(response, FlowRun) and isinstance(sweep, FlowRun)
    assert response.state is not None and response.state.is_completed(), response.state
    ui = prefect_server.removesuffix("/api")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # The newest runs first: the response and the sweep just run are on the first page.
            page.goto(f"{ui}/runs")
            expect(page.get_by_text(response.name, exact=True)).to_be_visible(timeout=60_000)
            expect(page.get_by_text("approval-sweep", exact=True).first).to_be_visible()

            page.goto(f"{ui}{RESPONSES_VIEW}")
            expect(page.get_by_text(response.name, exact=True)).to_be_visible(timeout=60_000)
            assert page.get_by_text("approval-sweep", exact=True).count() == 0
            assert page.get_by_text("expire_approvals", exact=True).count() == 0
        finally:
            browser.close()
