"""The ServiceNow simulator: the incident table over the Table API."""

from __future__ import annotations

import re

import pytest

from tests.sandbox.helpers import (
    INCIDENTS,
    Sandbox,
    basic,
)

# --- servicenow -------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("riposte", "wrong"), ("nobody", "x")])
def test_servicenow_rejects_missing_or_wrong_basic_auth(
    sb: Sandbox, auth: tuple[str, str] | None
) -> None:
    headers = basic(*auth) if auth else {}
    response = sb.http.get(INCIDENTS, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "User Not Authenticated",
            "detail": "Required to provide Auth information",
        },
        "status": "failure",
    }


def test_servicenow_create_returns_201_location_and_string_fields(sb: Sandbox) -> None:
    response = sb.http.post(
        INCIDENTS,
        headers=sb.snow,
        json={
            "short_description": "Suspicious PowerShell",
            "urgency": 1,
            "impact": 2,
            "correlation_id": "riposte-graph-a1",
            "u_custom": True,
            "work_notes": "created by riposte",
        },
    )
    assert response.status_code == 201
    record = response.json()["result"]
    assert re.fullmatch(r"[0-9a-f]{32}", record["sys_id"])
    assert response.headers["location"] == f"{sb.base}{INCIDENTS}/{record['sys_id']}"
    assert record["number"] == "INC0010001"
    assert (record["state"], record["active"]) == ("1", "true")
    assert (record["urgency"], record["impact"], record["priority"]) == ("1", "2", "2")
    assert record["u_custom"] == "true"
    assert record["work_notes"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", record["sys_created_on"])
    # Every value a string; references (opened_by: the API user) as {link, value} of strings.
    assert all(
        isinstance(v, str) or (set(v) == {"link", "value"} and isinstance(v["value"], str))
        for v in record.values()
    )
    assert record["opened_by"]["link"].endswith(f"/sys_user/{record['opened_by']['value']}")
    second = sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": "x"})
    assert second.json()["result"]["number"] == "INC0010002"
    (first, _) = sb.http.get("/_sandbox/servicenow/incidents").json()
    assert [j["value"] for j in first["journal"]] == ["created by riposte"]


def test_servicenow_query_by_correlation_id_returns_fields_and_total_count(sb: Sandbox) -> None:
    for key in ("k1", "k2", "k1"):
        sb.http.post(INCIDENTS, headers=sb.snow, json={"correlation_id": key})
    response = sb.http.get(
        INCIDENTS,
        headers=sb.snow,
        params={
            "sysparm_query": "correlation_id=k1^active=true^ORDERBYDESCnumber",
            "sysparm_fields": "sys_id,number,state",
            "sysparm_limit": "1",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-total-count"] == "2"
    (row,) = response.json()["result"]
    assert set(row) == {"sys_id", "number", "state"}
    assert row["number"] == "INC0010003"
    assert 'rel="next"' in response.headers["link"]


def test_servicenow_query_silently_ignores_unknown_field_and_matches_everything(
    sb: Sandbox,
) -> None:
    for key in ("k1", "k2"):
        sb.http.post(INCIDENTS, headers=sb.snow, json={"correlation_id": key})
    response = sb.http.get(INCIDENTS, headers=sb.snow, params={"sysparm_query": "u_alert_id=k1"})
    assert response.status_code == 200
    assert len(response.json()["result"]) == 2
    assert response.headers["x-total-count"] == "2"


def test_servicenow_query_with_no_match_is_200_with_empty_result(sb: Sandbox) -> None:
    sb.http.post(INCIDENTS, headers=sb.snow, json={"correlation_id": "k1"})
    response = sb.http.get(
        INCIDENTS, headers=sb.snow, params={"sysparm_query": "correlation_id=other"}
    )
    assert response.status_code == 200
    assert response.json() == {"result": []}
    assert response.headers["x-total-count"] == "0"


def test_servicenow_paging_with_limit_and_offset(sb: Sandbox) -> None:
    for i in range(5):
        sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": f"n{i}"})
    response = sb.http.get(
        INCIDENTS,
        headers=sb.snow,
        params={"sysparm_limit": "2", "sysparm_offset": "2", "sysparm_query": "ORDERBYnumber"},
    )
    assert [r["short_description"] for r in response.json()["result"]] == ["n2", "n3"]
    assert response.headers["x-total-count"] == "5"


def test_servicenow_patch_updates_fields_and_appends_work_notes(sb: Sandbox) -> None:
    created = sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": "x"})
    sys_id = created.json()["result"]["sys_id"]
    for note in ("note 1", "note 2"):
        response = sb.http.patch(
            f"{INCIDENTS}/{sys_id}",
            headers=sb.snow,
            json={
                "work_notes": note,
                "state": 6,
                "close_code": "Solution provided",
                "close_notes": "done",
            },
        )
        assert response.status_code == 200
    record = response.json()["result"]
    assert record["state"] == "6"
    assert record["work_notes"] == ""
    fetched = sb.http.get(f"{INCIDENTS}/{sys_id}", headers=sb.snow).json()["result"]
    assert fetched["state"] == "6"
    (incident,) = sb.http.get("/_sandbox/servicenow/incidents").json()
    assert [j["value"] for j in incident["journal"]] == ["note 1", "note 2"]
    assert all(j["element"] == "work_notes" for j in incident["journal"])


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_servicenow_unknown_sys_id_is_404_no_record_found(sb: Sandbox, method: str) -> None:
    response = sb.http.request(
        method, f"{INCIDENTS}/{'0' * 32}", headers=sb.snow, json={"state": "2"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No Record found"
    assert response.json()["status"] == "failure"


def test_servicenow_reference_fields_come_back_as_link_and_value(sb: Sandbox) -> None:
    created = sb.http.post(INCIDENTS, headers=sb.snow, json={"caller_id": "abc123"})
    caller = created.json()["result"]["caller_id"]
    assert caller["value"] == "abc123"
    assert caller["link"].endswith("/sys_user/abc123")
    sys_id = created.json()["result"]["sys_id"]
    plain = sb.http.get(
        f"{INCIDENTS}/{sys_id}",
        headers=sb.snow,
        params={"sysparm_exclude_reference_link": "true"},
    )
    assert plain.json()["result"]["caller_id"] == "abc123"
