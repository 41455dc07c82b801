"""End to end: the example Defender for APIs playbook (`examples/playbooks`), routed by its
policy, answering alerts pushed to the intake, alone and in a burst answered by `respond_batch`,
with an approval by link, a Retry that repeats nothing, and a run by hand from its deployment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from riposte.settings import BATCH_DEPLOYMENT
from tests.conftest import PREFECT_CLI, REPO, wait_until
from tests.test_approval_e2e import contain_run, indicators, links
from tests.test_policy_e2e import api_alert, flow_run, load, messages, push, wait_completed

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

EXAMPLE_POLICY = (REPO / "examples" / "playbooks" / "policy.yaml").read_text()
APPROVER = "soc-lead@example.com"


@pytest.fixture
def example_policy(use_policy: Callable[[str], None]) -> None:
    use_policy(EXAMPLE_POLICY)


def random_ip() -> str:
    a, b = os.urandom(2)
    return f"185.{220 + a % 30}.{b}.{1 + a % 250}"


def jira_issues(sandbox: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = sandbox.get("/_sandbox/jira/issues").json()
    return found


def issues_about(sandbox: httpx.Client, alert_ids: list[str]) -> list[dict[str, Any]]:
    """Issues whose text names one of the alerts (their description or a comment)."""
    return [i for i in jira_issues(sandbox) if any(a in json.dumps(i) for a in alert_ids)]


def comment_text(issue: dict[str, Any]) -> str:
    return json.dumps(issue["comments"])


def teams_about(sandbox: httpx.Client, alert_ids: list[str]) -> list[Any]:
    """The Teams messages about the alerts' tickets (not the approval requests)."""
    return [
        m
        for m in messages(sandbox, "teams")
        if any(a in json.dumps(m) for a in alert_ids) and "/approvals/" not in json.dumps(m)
    ]


def incidents(sandbox: httpx.Client) -> dict[str, dict[str, Any]]:
    """The sandbox's Defender incidents by id, with their alerts and the PATCHes they got."""
    return {i["id"]: i for i in sandbox.get("/_sandbox/graph/incidents").json()}


def side_effects(sandbox: httpx.Client) -> dict[str, Any]:
    return {
        "issues": [(i["key"], len(i["comments"])) for i in jira_issues(sandbox)],
        "teams": len(messages(sandbox, "teams")),
        "slack": len(messages(sandbox, "slack")),
        "indicators": len(indicators(sandbox)),
        "incident updates": sum(len(i["updates"]) for i in incidents(sandbox).values()),
    }


def prefect_retry(run_id: str | UUID) -> None:
    retry = subprocess.run(
        [PREFECT_CLI, "flow-run", "retry", str(run_id)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr

    def completed_again() -> FlowRun | None:
        run = flow_run(run_id)
        return run if run.state and run.state.is_completed() else None

    wait_until(completed_again, timeout=180, interval=0.5, what="the retried run to complete")


@pytest.mark.usefixtures("example_policy")
def test_the_example_tickets_asks_in_teams_and_blocks_only_after_a_yes(
    sandbox: httpx.Client, intake_url: str
) -> None:
    ip = random_ip()
    alert = api_alert("API_AccessFromSuspiciousIP", "dfa", ip=ip)
    load(sandbox, [alert])
    (run,) = wait_completed(push(intake_url, [alert]))

    (issue,) = issues_about(sandbox, [alert["id"]])
    assert issue["key"].startswith("SEC-")
    assert len(teams_about(sandbox, [alert["id"]])) == 1  # the ticket's message
    # The rule's `incident:` and the playbook's own tag, on the alert's Defender incident.
    incident = incidents(sandbox)[alert["incidentId"]]
    assert incident["customTags"] == ["riposte", "defender-for-apis"]
    assert incident["assignedTo"] == "soc-api@example.com"
    assert incident["updates"] == [["assignedTo", "customTags"]]
    contain = contain_run(alert, state="paused")
    assert indicators(sandbox) == []  # nothing blocked before a yes
    found = links(sandbox)
    assert set(found) == {(APPROVER, "approve"), (APPROVER, "reject")}
    taken = httpx.post(found[(APPROVER, "approve")], data={"reason": "seen it"}, timeout=30)
    assert taken.status_code == 200, taken.text
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    (indicator,) = indicators(sandbox)
    assert indicator["indicatorValue"] == ip and indicator["indicatorType"] == "IpAddress"
    assert contain.id == done.id

    # A Retry of the response from the UI repeats nothing: no issue, message, note or request.
    before = side_effects(sandbox)
    prefect_retry(run.id)
    assert side_effects(sandbox) == before
    assert incidents(sandbox)[alert["incidentId"]]["customTags"] == ["riposte", "defender-for-apis"]
    again = contain_run(alert, state="final")  # still the one containment run
    assert again.id == done.id


@pytest.mark.usefixtures("example_policy")
def test_the_example_never_blocks_a_listed_or_private_source_and_says_so(
    sandbox: httpx.Client, intake_url: str
) -> None:
    listed = api_alert("API_AccessFromTorExitNode", "dfa-listed", ip="198.51.100.7")
    private = api_alert("API_AccessFromSuspiciousIP", "dfa-private", ip="10.20.30.40")
    load(sandbox, [listed, private])
    wait_completed(push(intake_url, [listed, private]))
    for alert in (listed, private):
        (issue,) = issues_about(sandbox, [alert["id"]])
        assert "No public source IP outside never_block: nothing to block." in comment_text(issue)
    assert indicators(sandbox) == []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert not [r for r in runs if r.name in {f"contain-graph-{listed['id']}"}]


@pytest.mark.usefixtures("example_policy")
def test_the_example_sends_low_severity_to_the_digest_without_a_ticket(
    sandbox: httpx.Client, intake_url: str
) -> None:
    from riposte.tasks.digests import read_entries

    alert = api_alert("API_SpikeInLatency", "dfa-low", ip=random_ip())
    assert alert["severity"] == "low"
    load(sandbox, [alert])
    sent_at = datetime.now(UTC)
    wait_completed(push(intake_url, [alert]))
    assert issues_about(sandbox, [alert["id"]]) == []
    assert teams_about(sandbox, [alert["id"]]) == []
    since = sent_at - timedelta(hours=1)
    entries = [e for e in read_entries(since=since) if e.alert.id == alert["id"]]
    assert [e.rule for e in entries] == ["apis-block-source"]


@pytest.mark.usefixtures("example_policy")
def test_a_burst_answered_by_respond_batch_gets_one_ticket_per_group_and_a_retry_adds_nothing(
    sandbox: httpx.Client, intake_url: str
) -> None:
    ips = [random_ip(), random_ip()]
    # Three Defender incidents (an analyst's tag already on one of them).
    base = int.from_bytes(os.urandom(3), "big") * 10
    groups = [str(base + n) for n in range(3)]
    alerts = [
        api_alert(
            "API_AccessFromSuspiciousIP", f"dfa-burst{i}", ip=ips[i % 2], incident=groups[i % 3]
        )
        for i in range(30)
    ]
    load(sandbox, alerts)
    from riposte.blocks import DefenderCredentials

    graph = DefenderCredentials.load("riposte-defender").get_client()
    graph.update_incident(groups[0], {"customTags": ["analyst-tag"]})
    run_ids = push(intake_url, alerts)
    runs = wait_completed(run_ids, timeout=240)
    assert {r.deployment_id for r in runs} == {_deployment_id(BATCH_DEPLOYMENT)}

    ids = [a["id"] for a in alerts]
    issues = issues_about(sandbox, ids)
    # The throttle: one ticket per endpoint and source IP; every other alert a note on it.
    assert len(issues) == 2, [i["key"] for i in issues]
    noted = [a for a in ids if any(a in comment_text(i) for i in issues)]
    assert len(noted) == 28
    assert len(teams_about(sandbox, ids)) == 2
    requests = [contain_run(alert, state="paused") for alert in _openers(alerts, issues)]
    assert len(requests) == 2 and len({r.id for r in requests}) == 2
    # Each incident is written once, whichever of its ten alerts came first; the analyst's
    # tag stays (Graph replaces the list: the step reads it and adds to it).
    for n, incident_id in enumerate(groups):
        incident = incidents(sandbox)[incident_id]
        ours = ["riposte", "defender-for-apis"]
        assert incident["customTags"] == (["analyst-tag", *ours] if n == 0 else ours)
        assert incident["updates"][-1:] == [["assignedTo", "customTags"]], incident
        assert len(incident["updates"]) == (2 if n == 0 else 1), incident

    before = side_effects(sandbox)
    for run in runs:
        prefect_retry(run.id)
    assert side_effects(sandbox) == before


@pytest.mark.usefixtures("example_policy")
def test_the_example_runs_by_hand_from_its_deployment_form(sandbox: httpx.Client) -> None:
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("run_playbook/dfa_block_source_ip")
    schema = deployment.parameter_openapi_schema
    assert schema["properties"]["source"]["enum"] == [
        "cloud_apps",
        "defender_cloud",
        "defender_endpoint",
        "graph",
    ]
    params = schema["properties"]["params"]["properties"]
    assert params["never_block"]["description"].startswith("Networks never blocked")
    assert params["digest_at_most"]["default"] == "low"
    # Whole, not a bare reference (the UI leaves those out), with the field's own title.
    assert params["digest_at_most"]["title"] == "Digest At Most"
    assert "low" in params["digest_at_most"]["enum"] and "$ref" not in json.dumps(params)
    assert all(p.get("description") for p in schema["properties"].values())
    assert "playbook" not in schema["properties"]

    alert = api_alert("API_AccessFromSuspiciousIP", "dfa-hand", ip=random_ip())
    load(sandbox, [alert])
    run = run_deployment(
        "run_playbook/dfa_block_source_ip",
        parameters={"source": "graph", "alert_id": alert["id"], "params": {"block": False}},
        timeout=180,
    )
    assert isinstance(run, FlowRun) and run.state is not None
    assert run.state.is_completed(), run.state
    assert run.name == f"dfa_block_source_ip-graph-{alert['id']}"
    (issue,) = issues_about(sandbox, [alert["id"]])
    assert indicators(sandbox) == []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert not [r for r in runs if r.name == f"contain-graph-{alert['id']}"]  # block: false

    # Run again: the same issue, no second message.
    again = run_deployment(
        "run_playbook/dfa_block_source_ip",
        parameters={"source": "graph", "alert_id": alert["id"], "params": {"block": False}},
        timeout=180,
    )
    assert isinstance(again, FlowRun) and again.state is not None and again.state.is_completed()
    assert [i["key"] for i in issues_about(sandbox, [alert["id"]])] == [issue["key"]]
    assert len(teams_about(sandbox, [alert["id"]])) == 1


def _deployment_id(name: str) -> UUID:
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name).id


def _openers(alerts: list[dict[str, Any]], issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts that opened the issues (named in a description, not in a comment)."""
    openers = []
    for alert in alerts:
        for issue in issues:
            described = alert["id"] in json.dumps(issue["fields"])
            if described and alert["id"] not in comment_text(issue):
                openers.append(alert)
    return openers


@pytest.mark.usefixtures("example_policy")
def test_an_incident_that_cannot_be_written_still_lets_containment_be_asked(
    sandbox: httpx.Client, intake_url: str
) -> None:
    """Graph refuses the incident write (an app without SecurityIncident.ReadWrite.All): the
    response goes on (ticket, message, alert update, the approval request), then ends Failed
    naming the incident and the reason."""
    alert = api_alert("API_AccessFromSuspiciousIP", "dfa-noinc", ip=random_ip())
    load(sandbox, [alert])
    sandbox.post(
        "/_sandbox/faults",
        json={
            "service": "graph",
            "method": "PATCH",
            "path_contains": "/security/incidents/",
            "status": 403,
        },
    ).raise_for_status()
    (run_id,) = push(intake_url, [alert])

    def final() -> FlowRun | None:
        run = flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    run = wait_until(final, timeout=120, interval=0.5, what="the response to end")
    assert run.state is not None and run.state.is_failed(), run.state
    message = run.state.message or ""
    assert f"incident {alert['incidentId']} not written" in message and "403" in message
    assert len(issues_about(sandbox, [alert["id"]])) == 1
    assert contain_run(alert, state="paused") is not None  # asked all the same
    assert incidents(sandbox)[alert["incidentId"]]["customTags"] == []
