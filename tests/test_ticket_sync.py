"""The ticket sync end to end: alerts answered through the intake open ServiceNow tickets; an
analyst resolves or reopens a ticket, or changes an alert in Defender, in the sandbox; the
`sync_tickets` flow runs on the real Prefect server; each change is applied once and nothing
is echoed back."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from riposte.sandbox.samples import sample_graph_alerts
from tests.conftest import INTAKE_TOKEN, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

POLICY = """
defaults:
  ticket: {system: servicenow}
  channels: []
sync:
  close_ticket_when_alerts: all_resolved
  close_codes:
    "Solved (Permanently)": {classification: truePositive, determination: malware}
"""


def _post_alert(sandbox: httpx.Client, intake_url: str, tag: str) -> str:
    """A Graph alert pushed through the intake; its id once its response marked it in progress."""
    (alert,) = sample_graph_alerts(datetime.now(UTC))[:1]
    alert["id"] = f"sync-{tag}-{os.urandom(4).hex()}"
    sandbox.post("/_sandbox/graph/alerts", json=[alert]).raise_for_status()
    posted = httpx.post(
        f"{intake_url}/alerts/graph",
        json=alert,
        headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
        timeout=30,
    )
    assert posted.status_code == 202, posted.text
    wait_until(
        lambda: _alert(sandbox, alert["id"])["status"] == "inProgress",
        timeout=120,
        what="the alert in progress",
    )
    return str(alert["id"])


def _answered_alert(sandbox: httpx.Client, intake_url: str, tag: str) -> tuple[str, str]:
    """A Graph alert answered through the intake: its id and its ServiceNow ticket's number."""
    alert_id = _post_alert(sandbox, intake_url, tag)

    def ticket() -> str | None:
        for held in sandbox.get("/_sandbox/servicenow/incidents").json():
            if alert_id in held["record"]["correlation_id"]:
                return str(held["record"]["number"])
        return None

    number: str = wait_until(ticket, timeout=60, what="the alert's ticket")
    # The response's last step, the comment naming the ticket on the alert: done before a test
    # counts the comments it adds.
    wait_until(
        lambda: any(number in c["comment"] for c in _alert(sandbox, alert_id)["comments"]),
        timeout=60,
        what="the response's comment on the alert",
    )
    return alert_id, number


def _alert(sandbox: httpx.Client, alert_id: str) -> dict[str, Any]:
    listing = sandbox.get("/_sandbox/graph/alerts").json()
    items = (
        listing.get("alerts", listing.get("value", [])) if isinstance(listing, dict) else listing
    )
    (found,) = [a for a in items if a["id"] == alert_id]
    return dict(found)


def _notes(sandbox: httpx.Client, number: str) -> list[str]:
    (held,) = [
        h
        for h in sandbox.get("/_sandbox/servicenow/incidents").json()
        if h["record"]["number"] == number
    ]
    return [str(entry.get("value", "")) for entry in held.get("journal", [])]


def _record(sandbox: httpx.Client, number: str) -> dict[str, Any]:
    (held,) = [
        h
        for h in sandbox.get("/_sandbox/servicenow/incidents").json()
        if h["record"]["number"] == number
    ]
    return dict(held["record"])


def _sync() -> Any:
    from riposte.flows.sync import sync_tickets

    return sync_tickets()


def test_a_resolved_ticket_resolves_its_alert_once_and_a_reopened_alert_is_noted_once(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(POLICY)
    alert_id, number = _answered_alert(sandbox, intake_url, "snow")
    comments_before = len(_alert(sandbox, alert_id)["comments"])

    resolved = sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/resolve",
        json={
            "close_code": "Solved (Permanently)",
            "close_notes": "Host reimaged",
            "user": "ana.analyst",
        },
    )
    assert resolved.status_code == 200, resolved.text
    first = _sync()
    alert = _alert(sandbox, alert_id)
    assert (alert["status"], alert["classification"], alert["determination"]) == (
        "resolved",
        "truePositive",
        "malware",
    )
    added = alert["comments"][comments_before:]
    assert len(added) == 1, added
    assert number in added[0]["comment"] and "ana.analyst" in added[0]["comment"]
    assert any(r.alert.endswith(alert_id) and r.change == "alert resolved" for r in first.changes)
    sync_notes = [n for n in _notes(sandbox, number) if "Riposte resolved" in n]
    assert len(sync_notes) == 1, _notes(sandbox, number)
    # The alert's response run shows the ticket's state now.
    shown = _response_artifact(f"ticket-graph-{alert_id}")
    assert number in shown and "resolved by ana.analyst" in shown, shown

    # Again: nothing to apply, nothing echoed (the alert's change was the sync's own).
    again = _sync()
    assert [r for r in again.changes if number == r.ticket] == []
    assert len(_alert(sandbox, alert_id)["comments"]) == comments_before + 1
    notes_after = _notes(sandbox, number)
    assert len([n for n in notes_after if "Riposte resolved" in n]) == 1
    assert not [n for n in notes_after if "in Defender (now" in n], notes_after

    # A person reopens the alert in Defender: one note on the ticket, and the ticket's earlier
    # resolution is not applied again over the person's change.
    sandbox.post(
        "/_sandbox/graph/analyst/reopen",
        json={"alertId": alert_id, "by": "bob@contoso.com", "status": "inProgress"},
    ).raise_for_status()
    _sync()
    _sync()
    noted = [n for n in _notes(sandbox, number) if f"Alert graph {alert_id} was reopened" in n]
    assert len(noted) == 1, _notes(sandbox, number)
    assert _alert(sandbox, alert_id)["status"] == "inProgress"
    assert _record(sandbox, number)["state"] == "6"  # the ticket stays resolved


def test_an_alert_resolved_in_defender_resolves_its_ticket_when_the_policy_says_so(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(POLICY)
    alert_id, number = _answered_alert(sandbox, intake_url, "defender")
    sandbox.post(
        "/_sandbox/graph/analyst/resolve",
        json={
            "alertId": alert_id,
            "by": "bob@contoso.com",
            "classification": "falsePositive",
            "determination": "notMalicious",
        },
    ).raise_for_status()
    summary = _sync()
    changes = {r.change for r in summary.changes if r.ticket == number}
    assert {"resolved, reclassified as falsePositive / notMalicious", "ticket resolved"} <= changes
    record = _record(sandbox, number)
    assert (record["state"], record["close_code"]) == ("6", "Solved (Permanently)")
    noted = [n for n in _notes(sandbox, number) if f"Alert graph {alert_id} was resolved" in n]
    assert len(noted) == 1
    # The ticket resolved by the sync is not applied back over the person's verdict.
    _sync()
    alert = _alert(sandbox, alert_id)
    assert (alert["classification"], alert["determination"]) == ("falsePositive", "notMalicious")
    assert len([n for n in _notes(sandbox, number) if f"Alert graph {alert_id} was" in n]) == 1


def test_a_reopened_ticket_puts_its_alert_back_in_progress(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(POLICY.replace("close_ticket_when_alerts: all_resolved", "resolve_incident: false"))
    alert_id, number = _answered_alert(sandbox, intake_url, "reopen")
    sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/resolve",
        json={
            "close_code": "Duplicate",
            "close_notes": "Same as INC0000001",
            "user": "ana.analyst",
        },
    ).raise_for_status()
    _sync()
    alert = _alert(sandbox, alert_id)
    assert alert["status"] == "resolved"
    comment = alert["comments"][-1]["comment"]
    assert "Duplicate" in comment and "unknown" in comment

    sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/reopen",
        json={"user": "ana.analyst", "work_note": "Not a duplicate after all"},
    ).raise_for_status()
    _sync()
    _sync()
    alert = _alert(sandbox, alert_id)
    assert alert["status"] == "inProgress"
    reopened = [
        c for c in alert["comments"] if "reopened" in c["comment"] and number in c["comment"]
    ]
    assert len(reopened) == 1, alert["comments"]


JIRA_POLICY = """
defaults:
  ticket: {system: jira, project: SEC}
  channels: []
"""


def _jira_issue(sandbox: httpx.Client, alert_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for issue in sandbox.get("/_sandbox/jira/issues").json():
            if any(alert_id in label for label in issue["fields"]["labels"]):
                return dict(issue)
        return None

    issue: dict[str, Any] = wait_until(found, timeout=120, what="the alert's Jira issue")
    return issue


def _jira_comments(sandbox: httpx.Client, key: str) -> list[str]:
    from riposte.blocks.jira import adf_text

    (issue,) = [i for i in sandbox.get("/_sandbox/jira/issues").json() if i["key"] == key]
    return [adf_text(c.get("body")) for c in issue.get("comments", [])]


def test_a_jira_issue_moved_to_done_resolves_its_alert_once_and_planted_keys_are_ignored(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(JIRA_POLICY)
    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0}).raise_for_status()
    victim_id, _ = _answered_alert_jira(sandbox, intake_url, "victim")
    alert_id, key = _answered_alert_jira(sandbox, intake_url, "jira")
    # Anyone who can comment on the issue (a customer, an e-mail reply) writes what they like:
    # a comment ending in a marker naming another alert is no record of Riposte's.
    sandbox.post(
        f"/_sandbox/jira/issues/{key}/comments",
        json={
            "author": "Mallory Customer",
            "text": f"please close\n\nRiposte alert key: riposte-graph-{victim_id}",
        },
    ).raise_for_status()
    sandbox.post(
        f"/_sandbox/jira/issues/{key}/done",
        json={"resolution": "Won't Do", "author": "Alice Analyst"},
    ).raise_for_status()
    _sync()
    _sync()
    alert = _alert(sandbox, alert_id)
    assert (alert["status"], alert["classification"]) == (
        "resolved",
        "informationalExpectedActivity",
    )
    assert len([c for c in alert["comments"] if "Resolved because" in c["comment"]]) == 1
    assert _alert(sandbox, victim_id)["status"] == "inProgress"
    notes = [c for c in _jira_comments(sandbox, key) if "Riposte resolved" in c]
    assert len(notes) == 1, _jira_comments(sandbox, key)


def test_a_ticket_resolution_never_overwrites_a_verdict_a_person_gave(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(POLICY.replace("close_ticket_when_alerts: all_resolved", "resolve_incident: false"))
    alert_id, number = _answered_alert(sandbox, intake_url, "verdict")
    sandbox.post(
        "/_sandbox/graph/analyst/resolve",
        json={"alertId": alert_id, "by": "bob@contoso.com", "classification": "falsePositive"},
    ).raise_for_status()
    sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/resolve",
        json={"close_code": "Solved (Permanently)", "close_notes": "done", "user": "ana.analyst"},
    ).raise_for_status()
    _sync()
    _sync()
    alert = _alert(sandbox, alert_id)
    assert (alert["status"], alert["classification"]) == ("resolved", "falsePositive")
    assert not [c for c in alert["comments"] if "Resolved because" in c["comment"]]


def _answered_alert_jira(sandbox: httpx.Client, intake_url: str, tag: str) -> tuple[str, str]:
    """A Graph alert answered through the intake: its id and its Jira issue's key."""
    alert_id = _post_alert(sandbox, intake_url, tag)
    return alert_id, str(_jira_issue(sandbox, alert_id)["key"])


def test_a_first_reassignment_in_defender_is_noted_once(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    use_policy(POLICY)
    alert_id, number = _answered_alert(sandbox, intake_url, "assign")
    sandbox.post(
        "/_sandbox/graph/analyst/assign",
        json={"alertId": alert_id, "by": "lead@contoso.com", "assignedTo": "carol@contoso.com"},
    ).raise_for_status()
    _sync()
    _sync()
    noted = [n for n in _notes(sandbox, number) if "reassigned to carol@contoso.com" in n]
    assert len(noted) == 1, _notes(sandbox, number)
    assert _record(sandbox, number)["state"] != "6"  # not resolved: nothing was resolved


def _response_artifact(key: str) -> str:
    """The markdown of the artifact ``key`` on the response run named after its alert."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key.lower()]))
        )
        assert found, f"no artifact {key}"
        run = client.read_flow_run(found[0].flow_run_id)  # type: ignore[arg-type]
    assert run.name == key.removeprefix("ticket-") and "response" in run.tags, run
    return str(found[0].data)
