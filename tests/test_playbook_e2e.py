"""End to end: alerts pushed through the intake or found by the poll become one ticket, one
message per channel and an updated alert, as Completed flow runs on a real Prefect server."""

from __future__ import annotations

import os
import subprocess
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from riposte.sandbox.samples import sample_graph_alerts
from tests.conftest import INTAKE_TOKEN, PREFECT_CLI, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]


def _alerts(sandbox: httpx.Client, count: int, tag: str) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    alerts = sample_graph_alerts(datetime.now(UTC))[:count]
    for i, alert in enumerate(alerts):
        alert["id"] = f"{tag}-{i}-{os.urandom(4).hex()}"
    sandbox.post("/_sandbox/graph/alerts", json=alerts).raise_for_status()
    return alerts


def _flow_run(run_id: str | UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(run_id)))


def _wait_final(run_id: str | UUID, timeout: float = 120) -> FlowRun:
    def final() -> FlowRun | None:
        run = _flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    run: FlowRun = wait_until(final, timeout=timeout, interval=0.5, what=f"flow run {run_id}")
    return run


def _responses_for(alert_ids: list[str]) -> list[FlowRun]:
    names = {f"graph-{a}" for a in alert_ids}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=200)
    return [r for r in runs if r.name in names]


def _push(intake_url: str, alert: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{intake_url}/alerts/graph",
        json=alert,
        headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
        timeout=30,
    )


def _state(sandbox: httpx.Client) -> dict[str, Any]:
    return {
        "incidents": sandbox.get("/_sandbox/servicenow/incidents").json(),
        "alerts": sandbox.get("/_sandbox/graph/alerts").json(),
        "slack": sandbox.get("/_sandbox/slack/messages").json(),
        "teams": sandbox.get("/_sandbox/teams/messages").json(),
    }


def _items(listing: Any, key: str) -> list[Any]:
    """Sandbox inspection lists may come bare or wrapped in an object."""
    if isinstance(listing, dict):
        listing = listing.get(key, listing.get("value", []))
    assert isinstance(listing, list)
    return listing


def _assert_answered_once(sandbox: httpx.Client, alert_ids: list[str]) -> None:
    state = _state(sandbox)
    incidents = _items(state["incidents"], "incidents")
    for alert_id in alert_ids:
        matching = [i for i in incidents if alert_id in i["record"]["correlation_id"]]
        assert len(matching) == 1, f"alert {alert_id}: {len(matching)} tickets"
    alerts = {a["id"]: a for a in _items(state["alerts"], "alerts")}
    for alert_id in alert_ids:
        alert = alerts[alert_id]
        assert alert["status"] == "inProgress"
        assert len(alert["comments"]) == 1, alert["comments"]
        assert "INC" in alert["comments"][0]["comment"]
    slack = _items(state["slack"], "messages")
    teams = _items(state["teams"], "messages")
    for alert_id in alert_ids:
        assert sum(alert_id in str(m) for m in slack) == 1
        assert sum(alert_id in str(m) for m in teams) == 1


def test_pushed_alert_is_answered_by_one_completed_run(
    sandbox: httpx.Client, intake_url: str
) -> None:
    (alert,) = _alerts(sandbox, 1, "push")

    first = _push(intake_url, alert)
    assert first.status_code == 202, first.text
    (accepted,) = first.json()["accepted"]
    # The same alert delivered again (a sender retry) maps to the same run.
    again = _push(intake_url, alert)
    assert again.json()["accepted"][0]["flow_run_id"] == accepted["flow_run_id"]

    run = _wait_final(accepted["flow_run_id"])
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.name == f"graph-{alert['id']}"
    assert {"source:graph", f"severity:{alert['severity']}"} <= set(run.tags)
    _assert_answered_once(sandbox, [alert["id"]])

    with get_client(sync_client=True) as client:
        # Its own: an unfiltered read returns one page of the whole session's.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    report = [a for a in artifacts if a.flow_run_id == run.id and a.type == "markdown"]
    assert report, "the run left no markdown report"
    assert "INC" in str(report[0].data) and "in_progress" in str(report[0].data)


def test_polled_alerts_are_answered_once_even_when_polled_again(sandbox: httpx.Client) -> None:
    from prefect.deployments import run_deployment

    from riposte.settings import POLL_DEPLOYMENT

    alerts = _alerts(sandbox, 2, "poll")
    ids = [a["id"] for a in alerts]
    for _ in range(2):
        poll = run_deployment(POLL_DEPLOYMENT, timeout=0, as_subflow=False)
        poll = _wait_final(poll.id)  # type: ignore[union-attr]
        assert poll.state is not None and poll.state.is_completed(), poll.state
        runs = wait_until(
            lambda: (r := _responses_for(ids)) and len(r) >= 2 and r, what="response runs"
        )
        for run in runs:
            done = _wait_final(run.id)
            assert done.state is not None and done.state.is_completed(), done.state
        assert len(_responses_for(ids)) == 2
    _assert_answered_once(sandbox, ids)


def test_retry_after_failed_notification_creates_no_second_ticket_or_comment(
    sandbox: httpx.Client, intake_url: str
) -> None:
    (alert,) = _alerts(sandbox, 1, "retry")
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "slack", "method": "POST", "status": 403, "times": None},
    ).raise_for_status()

    response = _push(intake_url, alert)
    run_id = response.json()["accepted"][0]["flow_run_id"]
    failed = _wait_final(run_id)
    assert failed.state is not None and failed.state.is_failed()
    assert "slack" in (failed.state.message or "").lower()
    before = _state(sandbox)
    assert len(_items(before["incidents"], "incidents")) == 1
    assert _items(before["slack"], "messages") == []

    sandbox.delete("/_sandbox/faults").raise_for_status()
    retry = subprocess.run(
        [PREFECT_CLI, "flow-run", "retry", str(run_id)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr

    def completed_again() -> FlowRun | None:
        run = _flow_run(run_id)
        return run if run.state and run.state.is_completed() else None

    wait_until(completed_again, timeout=120, interval=0.5, what="the retried run to complete")
    _assert_answered_once(sandbox, [alert["id"]])
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [UUID(run_id)]})  # type: ignore[arg-type]
        )
    ticket_runs = [t for t in tasks if t.name.startswith("ticket ")]
    # The first attempt created the ticket; the retry got it back from the cache.
    assert sorted(t.state.name for t in ticket_runs if t.state) == ["Cached", "Completed"]


def test_playbook_files_a_jira_issue_when_asked_to(sandbox: httpx.Client) -> None:
    from prefect.deployments import run_deployment

    from riposte.settings import RESPOND_DEPLOYMENT

    (alert,) = _alerts(sandbox, 1, "jira")
    run = run_deployment(
        RESPOND_DEPLOYMENT,
        parameters={
            "alert_id": alert["id"],
            "ticketing_block": "jira-credentials/riposte-jira",
            "channel_blocks": ["slack-incoming-webhook/riposte-slack"],
        },
        timeout=0,
        as_subflow=False,
    )
    done = _wait_final(run.id)  # type: ignore[union-attr]
    assert done.state is not None and done.state.is_completed(), done.state
    issues = sandbox.get("/_sandbox/jira/issues").json()
    assert len(issues) == 1
    assert any(alert["id"] in label for label in issues[0]["fields"]["labels"])
    assert issues[0]["fields"]["description"]["type"] == "doc"
    assert sandbox.get("/_sandbox/servicenow/incidents").json() == []
    (stored,) = [a for a in sandbox.get("/_sandbox/graph/alerts").json() if a["id"] == alert["id"]]
    assert issues[0]["key"] in stored["comments"][0]["comment"]
    assert len(sandbox.get("/_sandbox/teams/messages").json()) == 0
    assert len(sandbox.get("/_sandbox/slack/messages").json()) == 1


def test_burst_is_answered_in_batches_and_each_alert_once(
    sandbox: httpx.Client, intake_url: str
) -> None:
    from datetime import UTC, datetime

    alerts = []
    for i in range(12):
        alert = sample_graph_alerts(datetime.now(UTC))[i % 4]
        alert["id"] = f"burst-{i}-{os.urandom(3).hex()}"
        alerts.append(alert)
    sandbox.post("/_sandbox/graph/alerts", json=alerts).raise_for_status()
    # The same alerts twice at once: a sender retrying while the first delivery is in flight.
    body = {"value": alerts}
    with httpx.Client(timeout=60) as client:
        first = client.post(
            f"{intake_url}/alerts/graph",
            json=body,
            headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
        )
        second = client.post(
            f"{intake_url}/alerts/graph",
            json={"value": list(reversed(alerts))},
            headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
        )
    assert first.status_code == second.status_code == 202
    run_ids = {a["flow_run_id"] for r in (first, second) for a in r.json()["accepted"]}
    assert len(run_ids) == 1  # one batch run: the same alerts make the same idempotency key
    with get_client(sync_client=True) as client:
        batch = client.read_flow_run(UUID(run_ids.pop()))
    assert batch.name.startswith("batch-")
    done = _wait_final(batch.id, timeout=180)
    assert done.state is not None and done.state.is_completed(), done.state
    _assert_answered_once(sandbox, [a["id"] for a in alerts])


def test_rerunning_an_answered_alert_does_nothing_twice(sandbox: httpx.Client) -> None:
    from prefect.deployments import run_deployment

    from riposte.settings import BATCH_DEPLOYMENT, RESPOND_DEPLOYMENT

    alerts = _alerts(sandbox, 3, "rerun")
    refs = [{"source": "graph", "alert_id": a["id"], "revision": a["severity"]} for a in alerts]
    # The same alerts in two different batches at the same time, and a single run on top.
    runs = [
        run_deployment(BATCH_DEPLOYMENT, parameters={"alerts": refs}, timeout=0, as_subflow=False),
        run_deployment(
            BATCH_DEPLOYMENT,
            parameters={"alerts": list(reversed(refs))},
            timeout=0,
            as_subflow=False,
        ),
        run_deployment(
            RESPOND_DEPLOYMENT,
            parameters={"alert_id": alerts[0]["id"]},
            timeout=0,
            as_subflow=False,
        ),
    ]
    for run in runs:
        done = _wait_final(run.id)  # type: ignore[union-attr]
        assert done.state is not None and done.state.is_completed(), done.state
    _assert_answered_once(sandbox, [a["id"] for a in alerts])


@pytest.mark.parametrize("source", ["graph", "defender_endpoint", "cloud_apps", "defender_cloud"])
def test_each_source_is_answered_end_to_end(
    sandbox: httpx.Client, intake_url: str, source: str
) -> None:
    from datetime import UTC, datetime

    from riposte.alerts.model import Status
    from riposte.alerts.sources import parse_alert
    from riposte.deployments.stack import SANDBOX_PREFIX, _fresh_ids
    from riposte.sandbox.samples import sample_alerts_by_source

    payload = _fresh_ids(source, sample_alerts_by_source(datetime.now(UTC))[source][0])
    prefix = SANDBOX_PREFIX[source]
    sandbox.post(f"/_sandbox/{prefix}/alerts", json=[payload]).raise_for_status()
    alert = parse_alert(payload, source)

    response = httpx.post(
        f"{intake_url}/alerts/{source}",
        json=payload,
        headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    run = _wait_final(response.json()["accepted"][0]["flow_run_id"])
    assert run.state is not None and run.state.is_completed(), run.state

    incidents = sandbox.get("/_sandbox/servicenow/incidents").json()
    assert [i["record"]["correlation_id"] for i in incidents] == [alert.correlation_key]
    (stored,) = [
        parse_alert(p, source)
        for p in _items(sandbox.get(f"/_sandbox/{prefix}/alerts").json(), "alerts")
        if parse_alert(p, source).id == alert.id
    ]
    assert stored.status == Status.IN_PROGRESS
    assert len(sandbox.get("/_sandbox/slack/messages").json()) == 1


def test_reconciliation_answers_an_alert_whose_webhook_was_dropped(sandbox: httpx.Client) -> None:
    from prefect.deployments import run_deployment

    from riposte.settings import RECONCILE_DEPLOYMENT

    (answered,) = _alerts(sandbox, 1, "reconcile-seen")
    first = run_deployment(
        "respond_to_alert/respond",
        parameters={"alert_id": answered["id"]},
        timeout=0,
        as_subflow=False,
    )
    _wait_final(first.id)  # type: ignore[union-attr]
    (dropped,) = _alerts(sandbox, 1, "reconcile-dropped")  # never pushed, never polled

    def reconcile() -> list[dict[str, Any]]:
        run = run_deployment(
            RECONCILE_DEPLOYMENT,
            parameters={"sources": ["graph"]},
            timeout=0,
            as_subflow=False,
        )
        done = _wait_final(run.id)  # type: ignore[union-attr]
        assert done.state is not None and done.state.is_completed(), done.state
        summaries: list[dict[str, Any]] = [
            s.model_dump()
            for s in done.state.result()  # type: ignore[union-attr]
        ]
        return summaries

    (summary,) = reconcile()
    assert summary["unanswered"] == [dropped["id"]]
    (response,) = wait_until(lambda: _responses_for([dropped["id"]]), what="the response run")
    done = _wait_final(response.id)
    assert done.state is not None and done.state.is_completed()
    _assert_answered_once(sandbox, [answered["id"], dropped["id"]])
    (again,) = reconcile()
    assert again["unanswered"] == []


def test_a_failed_response_still_writes_its_report_and_tags(
    sandbox: httpx.Client, intake_url: str
) -> None:
    (alert,) = _alerts(sandbox, 1, "failed-report")
    # The ticket is opened and the messages sent; marking the alert in progress is refused.
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "graph", "method": "PATCH", "status": 403, "times": None},
    ).raise_for_status()
    try:
        response = _push(intake_url, alert)
        run_id = response.json()["accepted"][0]["flow_run_id"]
        failed = _wait_final(run_id)
    finally:
        sandbox.delete("/_sandbox/faults").raise_for_status()
    assert failed.state is not None and failed.state.is_failed(), failed.state
    # Found like any answered alert: by its rule and disposition.
    assert {"source:graph", "disposition:ticket"} <= set(failed.tags), failed.tags
    assert any(t.startswith("rule:") for t in failed.tags), failed.tags

    incidents = _items(_state(sandbox)["incidents"], "incidents")
    (ticket,) = [i for i in incidents if alert["id"] in i["record"]["correlation_id"]]
    number = ticket["record"]["number"]
    with get_client(sync_client=True) as client:
        # Its own: an unfiltered read returns one page of the whole session's.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[failed.id]))
        )
    (report,) = [a for a in artifacts if a.flow_run_id == failed.id and a.type == "markdown"]
    assert report.key == f"response-graph-{alert['id']}".lower()
    assert "FAILED" in (report.description or "")
    text = str(report.data)
    assert f"`{alert['id']}`: FAILED" in text
    # What was done: the ticket, with its link, and the messages sent.
    assert f"[{number}](" in text and "nav_to.do" in text
    assert "| message slack:#soc-alerts | sent |" in text, text
    # What was not done, and why.
    assert "**Stopped by**:" in text and "403" in text
    assert "| NOT done | the ticket_and_notify playbook stopped here" in text

    # The logs name the ticket and its link before the failure.
    def logged() -> list[str]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(str(run_id))]))
            )
        found = [log.message for log in logs]
        return found if any("ticket link: " in m for m in found) else []

    lines = wait_until(logged, timeout=60, what="the run's log lines")
    assert any(f"ticket created: servicenow {number}" in m for m in lines), lines
    assert any("ticket link: " in m and "nav_to.do" in m for m in lines), lines
    assert any("message sent to slack:#soc-alerts" in m for m in lines), lines


def test_a_failed_response_whose_playbooks_finished_marks_none_stopped_nor_logs_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The report of a response that failed after its playbooks returned (recording the
    suppression window, or later) says no playbook stopped, and logs nothing again; one whose
    playbook raised flags that one alone."""
    from datetime import UTC, datetime

    import riposte.flows.respond as respond
    from riposte.alerts.response import AlertRef
    from riposte.alerts.throttle import Disposition, Outcome
    from riposte.playbooks import ActionResult
    from riposte.tasks.decide import PolicyDecision
    from tests.alert_factory import make_alert

    logged: list[str] = []
    reports: list[str] = []

    class Logger:
        def info(self, message: str, *args: Any) -> None:
            logged.append(message % args)

        warning = info

    monkeypatch.setattr(respond, "get_run_logger", Logger)
    monkeypatch.setattr(respond, "tag_current_run", lambda tags: None)
    monkeypatch.setattr(
        respond, "create_markdown_artifact", lambda **kw: reports.append(kw["markdown"])
    )
    now = datetime.now(UTC)
    outcomes = tuple(
        Outcome(
            rule=rule,
            playbook="ticket_and_notify",
            disposition=Disposition.TICKET,
            reason="matched",
            at=now,
        )
        for rule in ("first", "second")
    )
    verdict = PolicyDecision(
        policy_origin="policy.yaml",
        policy_sha256="0" * 64,
        policy_fallback=False,
        matched_rules=("first", "second"),
        actions=(),
        outcomes=outcomes,
    )
    results = [
        ActionResult(
            rule=o.rule, playbook=o.playbook, disposition="ticket", reason="r", closed=o.rule
        )
        for o in outcomes
    ]
    ref = AlertRef(source="graph", alert_id="a`1|b", revision="high")
    progress = respond.Progress(
        alert=make_alert("a`1|b"), verdict=verdict, results=results, finished=2
    )

    respond._record_failure(ref, progress, RuntimeError("the suppression was not recorded"))
    (report,) = reports
    assert report.startswith("# Response to graph alert `a'1\\|b`: FAILED"), report
    assert "NOT done" not in report, report
    assert not [m for m in logged if "before the failure" in m], logged

    reports.clear()
    progress.finished = 1  # the second playbook raised
    respond._record_failure(ref, progress, RuntimeError("ServiceNow: 503"))
    (report,) = reports
    assert report.count("NOT done") == 1, report
    assert "| closed at the source | `second` |\n| NOT done | the ticket_and_notify" in report
    assert [m for m in logged if "before the failure" in m] == [
        "graph-a`1|b: closed at the source: second (before the failure)"
    ]
