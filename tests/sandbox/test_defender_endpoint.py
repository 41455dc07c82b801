"""The Defender for Endpoint simulator: alerts list, filter, get and update."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.helpers import (
    GRAPH_TIME_RE,
    MDE_ALERTS,
    MDE_SCOPE,
    Sandbox,
    bearer,
    graph_ticks,
)

# --- Defender for Endpoint ---------------------------------------------------------------------


def mde_alert(alert_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": alert_id, "title": f"alert {alert_id}", "severity": "Medium", **fields}


def load_mde(sb: Sandbox, alerts: list[dict[str, Any]]) -> None:
    response = sb.http.post("/_sandbox/mde/alerts", json=alerts)
    assert response.json()["loaded"] == len(alerts)


def test_mde_filters_on_last_update_time_and_pages_with_top_and_skip(sb: Sandbox) -> None:
    load_mde(
        sb,
        [mde_alert(f"m{i}", lastUpdateTime=f"2024-05-01T1{i}:00:00.1234567Z") for i in range(5)],
    )
    headers = bearer(sb, MDE_SCOPE)
    params = {"$filter": "lastUpdateTime ge 2024-05-01T11:00:00Z", "$top": "2"}
    first = sb.http.get(MDE_ALERTS, headers=headers, params=params).json()
    rest = sb.http.get(MDE_ALERTS, headers=headers, params={**params, "$skip": "2"}).json()
    assert first["@odata.context"].endswith("$metadata#Alerts")
    assert "@odata.nextLink" not in first
    ids = [a["id"] for a in first["value"] + rest["value"]]
    assert sorted(ids) == ["m1", "m2", "m3", "m4"]
    assert len(first["value"]) == 2


def test_mde_filter_combines_clauses_and_knows_pascal_case_enums(sb: Sandbox) -> None:
    load_mde(
        sb,
        [
            mde_alert("a", status="New", incidentId=7),
            mde_alert("b", status="Resolved", incidentId=7),
            mde_alert("c", status="New", incidentId=8),
        ],
    )
    response = sb.http.get(
        MDE_ALERTS,
        headers=bearer(sb, MDE_SCOPE),
        params={"$filter": "status eq 'New' and incidentId eq 7"},
    )
    assert [a["id"] for a in response.json()["value"]] == ["a"]


@pytest.mark.parametrize(
    "params",
    [
        {"$top": "10001"},
        {"$skip": "-1"},
        {"$filter": "title eq 'x'"},
        {"$filter": "status eq 'resolved'"},
        {"$filter": "lastUpdateTime ge 'yesterday'"},
        {"$expand": "machine"},
    ],
)
def test_mde_rejects_invalid_query_options_with_400(sb: Sandbox, params: dict[str, str]) -> None:
    response = sb.http.get(MDE_ALERTS, headers=bearer(sb, MDE_SCOPE), params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_mde_sends_evidence_only_when_expanded(sb: Sandbox) -> None:
    load_mde(sb, [mde_alert("e1", evidence=[{"entityType": "Ip", "ipAddress": "203.0.113.9"}])])
    headers = bearer(sb, MDE_SCOPE)
    plain = sb.http.get(f"{MDE_ALERTS}/e1", headers=headers).json()
    expanded = sb.http.get(f"{MDE_ALERTS}/e1", headers=headers, params={"$expand": "evidence"})
    assert "evidence" not in plain
    assert expanded.json()["evidence"][0]["ipAddress"] == "203.0.113.9"
    listed = sb.http.get(MDE_ALERTS, headers=headers, params={"$expand": "evidence"}).json()
    assert listed["value"][0]["evidence"]


@pytest.mark.parametrize(
    "body",
    [
        {"status": "resolved"},
        {"classification": "falsePositive"},
        {"determination": "notMalicious"},
        {"severity": "High"},
        {"comment": ""},
        {},
        [],
    ],
)
def test_mde_update_accepts_only_pascal_case_values_of_writable_properties(
    sb: Sandbox, body: Any
) -> None:
    load_mde(sb, [mde_alert("p1")])
    response = sb.http.patch(f"{MDE_ALERTS}/p1", headers=bearer(sb, MDE_SCOPE), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidRequestBody"


def test_mde_update_resolves_adds_comment_and_moves_last_update_time(sb: Sandbox) -> None:
    load_mde(sb, [mde_alert("u1", status="New", lastUpdateTime="2024-05-01T10:00:00Z")])
    response = sb.http.patch(
        f"{MDE_ALERTS}/u1",
        headers=bearer(sb, MDE_SCOPE),
        json={
            "status": "Resolved",
            "classification": "TruePositive",
            "determination": "Malware",
            "comment": "Contained",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["classification"], body["determination"]) == (
        "Resolved",
        "TruePositive",
        "Malware",
    )
    assert body["resolvedTime"] and GRAPH_TIME_RE.match(body["lastUpdateTime"])
    assert graph_ticks(body["lastUpdateTime"]) > graph_ticks("2024-05-01T10:00:00Z")
    assert body["comments"] == [
        {"comment": "Contained", "createdBy": "Automation", "createdTime": body["lastUpdateTime"]}
    ]


def test_mde_unknown_alert_is_404_resource_not_found(sb: Sandbox) -> None:
    headers = bearer(sb, MDE_SCOPE)
    for response in (
        sb.http.get(f"{MDE_ALERTS}/nope", headers=headers),
        sb.http.patch(f"{MDE_ALERTS}/nope", headers=headers, json={"status": "InProgress"}),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ResourceNotFound"
