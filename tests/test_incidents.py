"""Defender incidents through Microsoft Graph: the simulator as Graph documents it, the client,
and the step that tags, assigns and comments once per incident and change."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from riposte.alerts.incidents import IncidentUpdate
from riposte.blocks.errors import ServiceNotFoundError, ServiceRejectedError
from riposte.sandbox.samples import sample_graph_alerts


def _alerts(incident: str, count: int) -> list[dict[str, Any]]:
    template = sample_graph_alerts(datetime.now(UTC))[0]
    out = []
    for i in range(count):
        alert = json.loads(json.dumps(template))
        alert.update(id=f"inc-{os.urandom(4).hex()}-{i}", incidentId=incident)
        out.append(alert)
    return out


@pytest.fixture
def graph(stack_blocks: list[str], sandbox: httpx.Client) -> Any:
    from riposte.blocks import DefenderCredentials

    return DefenderCredentials.load("riposte-defender").get_client()


def _incident_id() -> str:
    return str(int.from_bytes(os.urandom(3), "big"))


def test_an_incident_lists_its_alerts_and_takes_graph_s_own_spellings(
    graph: Any, sandbox: httpx.Client
) -> None:
    incident_id = _incident_id()
    alerts = _alerts(incident_id, 2)
    sandbox.post("/_sandbox/graph/alerts", json=alerts).raise_for_status()
    found = graph.get_incident(incident_id, with_alerts=True)
    assert found["id"] == incident_id and found["status"] == "active"
    assert sorted(a["id"] for a in found["alerts"]) == sorted(a["id"] for a in alerts)
    assert "alerts" not in graph.get_incident(incident_id)
    after = graph.update_incident(
        incident_id, {"classification": "truePositive", "determination": "malware"}
    )
    assert (after["classification"], after["determination"]) == ("truePositive", "malware")
    # PascalCase (the XDR API's, and an example in Graph's own page) and retired values: 400.
    for body in ({"classification": "TruePositive"}, {"status": "inProgress"}, {"owner": "x"}):
        with pytest.raises(ServiceRejectedError, match="incident"):
            graph.update_incident(incident_id, body)
    with pytest.raises(ServiceNotFoundError):
        graph.get_incident("404404404")
    # A PATCH replaces the whole tag list.
    graph.update_incident(incident_id, {"customTags": ["a"]})
    assert graph.update_incident(incident_id, {"customTags": ["b"]})["customTags"] == ["b"]
    comments = graph.comment_incident(incident_id, "first")
    assert [c["comment"] for c in graph.comment_incident(incident_id, "second")] == [
        "first",
        "second",
    ]
    assert len(comments) == 1


def test_an_endpoint_alert_s_incident_is_served_by_graph_as_defender_correlates_it(
    graph: Any, sandbox: httpx.Client
) -> None:
    from riposte.sandbox.samples import sample_endpoint_alerts

    incident_id = _incident_id()
    alert = dict(
        sample_endpoint_alerts(datetime.now(UTC))[1],
        id=f"da-inc-{os.urandom(4).hex()}",
        incidentId=int(incident_id),  # a number in this API
    )
    sandbox.post("/_sandbox/mde/alerts", json=[alert]).raise_for_status()

    found = graph.get_incident(incident_id)
    assert (found["id"], found["displayName"], found["severity"]) == (
        incident_id,
        alert["title"],
        "high",
    )
    after = graph.update_incident(incident_id, {"customTags": ["riposte"]})
    assert after["customTags"] == ["riposte"]


def test_the_change_asked_is_checked_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError):
        IncidentUpdate(status="inProgress")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        IncidentUpdate(tags=("bad\ntag",))
    with pytest.raises(ValidationError):
        IncidentUpdate(owner="x")  # type: ignore[call-arg]
    change = IncidentUpdate(tags=("riposte", "x"), assign_to="a@b.c")
    current = {"customTags": ["mine", "x"], "assignedTo": "a@b.c", "status": "active"}
    assert change.patch(current) == {"customTags": ["mine", "x", "riposte"]}
    assert change.patch({"customTags": ["riposte", "x"], "assignedTo": "a@b.c"}) == {}
    merged = IncidentUpdate(tags=("y",), status="resolved").merged_over(change)
    assert merged.tags == ("riposte", "x", "y") and merged.assign_to == "a@b.c"


def test_several_alerts_of_one_incident_write_it_once_and_keep_a_person_s_tags(
    graph: Any, sandbox: httpx.Client
) -> None:
    """The step is keyed by the incident and the change: the second alert's call comes back
    Cached; a re-run with the same change writes nothing; a tag a person added stays."""
    from riposte.blocks import DefenderCredentials
    from riposte.tasks.incidents import update_incident

    incident_id = _incident_id()
    sandbox.post("/_sandbox/graph/alerts", json=_alerts(incident_id, 3)).raise_for_status()
    graph.update_incident(incident_id, {"customTags": ["analyst"]})
    defender = DefenderCredentials.load("riposte-defender")
    change = IncidentUpdate(tags=("riposte",), assign_to="soc@example.com", comment="Riposte")
    first = update_incident(defender, incident_id, change)
    second = update_incident(defender, incident_id, change)
    assert first == second
    assert first.fields == ("assignedTo", "customTags") and first.comment_added
    (stored,) = [
        i for i in sandbox.get("/_sandbox/graph/incidents").json() if i["id"] == incident_id
    ]
    assert stored["customTags"] == ["analyst", "riposte"]
    assert stored["updates"] == [["customTags"], ["assignedTo", "customTags"]]
    assert [c["comment"] for c in stored["comments"]] == ["Riposte"]
    # Another change (a later rule, a person's edit undone): only what differs is written.
    graph.update_incident(incident_id, {"assignedTo": "someone.else@example.com"})
    again = update_incident(
        defender, incident_id, change.model_copy(update={"comment": None, "status": "resolved"})
    )
    assert again.fields == ("assignedTo", "status") and not again.comment_added


def test_a_merged_incident_is_written_where_defender_redirected_it(
    graph: Any, sandbox: httpx.Client
) -> None:
    from riposte.blocks import DefenderCredentials
    from riposte.tasks.incidents import update_incident

    old, new = _incident_id(), _incident_id()
    sandbox.post("/_sandbox/graph/alerts", json=_alerts(old, 1) + _alerts(new, 1))
    sandbox.post(f"/_sandbox/graph/incidents/{old}/merge", json={"into": new}).raise_for_status()
    defender = DefenderCredentials.load("riposte-defender")
    write = update_incident(defender, old, IncidentUpdate(tags=("riposte",)))
    assert write.incident_id == new
    stored = {i["id"]: i for i in sandbox.get("/_sandbox/graph/incidents").json()}
    assert stored[new]["customTags"] == ["riposte"] and stored[old]["customTags"] == []


def test_two_different_changes_to_one_incident_at_once_lose_no_tag(
    graph: Any, sandbox: httpx.Client
) -> None:
    """Two rules (or playbooks) ask different tags of one incident at the same moment: the
    read-add-write holds a lock on the incident, so neither list overwrites the other."""
    from concurrent.futures import ThreadPoolExecutor

    from riposte.blocks import DefenderCredentials
    from riposte.tasks.incidents import update_incident

    incident_id = _incident_id()
    sandbox.post("/_sandbox/graph/alerts", json=_alerts(incident_id, 2)).raise_for_status()
    defender = DefenderCredentials.load("riposte-defender")
    changes = [IncidentUpdate(tags=(f"tag-{n}",)) for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda c: update_incident(defender, incident_id, c), changes))
    (stored,) = [
        i for i in sandbox.get("/_sandbox/graph/incidents").json() if i["id"] == incident_id
    ]
    assert sorted(stored["customTags"]) == [f"tag-{n}" for n in range(6)]
