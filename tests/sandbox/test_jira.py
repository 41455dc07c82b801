"""The Jira simulator: issues, search, comments and transitions."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.sandbox.helpers import (
    JIRA,
    Sandbox,
    adf,
    basic,
    new_issue,
)

# --- jira -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, basic("riposte@example.com", "wrong"), {"Authorization": "Bearer abc"}],
)
def test_jira_rejects_missing_or_wrong_basic_auth(sb: Sandbox, headers: dict[str, str]) -> None:
    response = sb.http.get(f"{JIRA}/search/jql", headers=headers, params={"jql": "project = SOC"})
    assert response.status_code == 401
    body = response.json()
    assert body["errorMessages"] and body["errors"] == {}


def test_jira_create_issue_returns_201_with_id_key_and_self(sb: Sandbox) -> None:
    first, second = new_issue(sb), new_issue(sb, project={"key": "OPS"})
    assert first.status_code == 201
    assert first.json() == {
        "id": "10001",
        "key": "SOC-1",
        "self": f"{sb.base}{JIRA}/issue/10001",
    }
    assert second.json()["key"] == "OPS-1"
    fetched = sb.http.get(f"{JIRA}/issue/SOC-1", headers=sb.jira).json()
    assert fetched["fields"]["summary"] == "Suspicious PowerShell"
    assert fetched["fields"]["status"]["name"] == "To Do"
    assert fetched["fields"]["comment"]["total"] == 0


@pytest.mark.parametrize("description", ["plain text", {"type": "paragraph"}, ["doc"]])
def test_jira_v3_rejects_description_that_is_not_adf(sb: Sandbox, description: Any) -> None:
    response = new_issue(sb, description=description)
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "description": "Operation value must be an Atlassian Document"
    }


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"project": {"key": "NOPE"}}, "project"),
        ({"summary": ""}, "summary"),
        ({"summary": None}, "summary"),
        ({"labels": ["has space"]}, "labels"),
        ({"issuetype": {"name": "Unicorn"}}, "issuetype"),
        ({"priority": {"name": "Urgent!"}}, "priority"),
    ],
)
def test_jira_create_reports_invalid_fields_in_errors(
    sb: Sandbox, fields: dict[str, Any], error_field: str
) -> None:
    response = new_issue(sb, **fields)
    assert response.status_code == 400
    assert error_field in response.json()["errors"]
    if error_field == "project":
        assert response.json() == {
            "errorMessages": [],
            "errors": {"project": "valid project is required"},
        }


def test_jira_search_by_label_pages_with_token_absent_on_last_page(sb: Sandbox) -> None:
    sb.http.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0})  # paging, not lag
    for _ in range(5):
        new_issue(sb, labels=["burst"])
    new_issue(sb, labels=["other"])
    keys: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params = {"jql": 'labels = "burst" ORDER BY created DESC', "maxResults": "2"}
        params["fields"] = "summary,status,labels"
        if token:
            params["nextPageToken"] = token
        body = sb.http.get(f"{JIRA}/search/jql", headers=sb.jira, params=params).json()
        pages += 1
        keys += [i["key"] for i in body["issues"]]
        for issue in body["issues"]:
            assert set(issue["fields"]) == {"summary", "status", "labels"}
            assert issue["self"].endswith(f"/issue/{issue['id']}")
        if body["isLast"]:
            assert "nextPageToken" not in body
            break
        token = body["nextPageToken"]
    assert pages == 3
    assert sorted(keys) == [f"SOC-{i}" for i in range(1, 6)]


def test_jira_search_accepts_post_body_and_bare_values(sb: Sandbox) -> None:
    sb.http.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0})  # the body, not lag
    new_issue(sb, labels=["x1"])
    new_issue(sb, labels=["x2"])
    response = sb.http.post(
        f"{JIRA}/search/jql",
        headers=sb.jira,
        json={"jql": "project = SOC and labels = x2", "fields": ["labels"], "maxResults": 10},
    )
    assert response.status_code == 200
    body = response.json()
    assert [i["key"] for i in body["issues"]] == ["SOC-2"]
    assert body["issues"][0]["fields"] == {"labels": ["x2"]}
    assert body["isLast"] is True
    by_key = sb.http.get(f"{JIRA}/search/jql", headers=sb.jira, params={"jql": "key = SOC-1"})
    assert [i["key"] for i in by_key.json()["issues"]] == ["SOC-1"]


@pytest.mark.parametrize("jql", ["", "   ", "ORDER BY created DESC"])
def test_jira_unbounded_jql_is_bad_request(sb: Sandbox, jql: str) -> None:
    response = sb.http.get(f"{JIRA}/search/jql", headers=sb.jira, params={"jql": jql})
    assert response.status_code == 400
    assert response.json()["errorMessages"]


def test_jira_search_rejects_unknown_field_and_project(sb: Sandbox) -> None:
    for jql in ("colour = red", "project = NOPE"):
        response = sb.http.get(f"{JIRA}/search/jql", headers=sb.jira, params={"jql": jql})
        assert response.status_code == 400, jql


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_jira_old_search_endpoint_is_gone(sb: Sandbox, method: str) -> None:
    response = sb.http.request(
        method, f"{JIRA}/search", headers=sb.jira, params={"jql": "project = SOC"}
    )
    assert response.status_code == 410
    assert "/rest/api/3/search/jql" in response.json()["errorMessages"][0]


def test_jira_new_issue_is_invisible_to_search_during_index_lag(sb: Sandbox) -> None:
    sb.http.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0.5})
    created = new_issue(sb, labels=["lagging"]).json()
    params = {"jql": "labels = lagging"}
    first = sb.http.get(f"{JIRA}/search/jql", headers=sb.jira, params=params).json()
    assert first["issues"] == []
    # reconcileIssues is Jira's read-after-write escape hatch.
    reconciled = sb.http.post(
        f"{JIRA}/search/jql",
        headers=sb.jira,
        json={"jql": "labels = lagging", "reconcileIssues": [int(created["id"])]},
    ).json()
    assert [i["key"] for i in reconciled["issues"]] == [created["key"]]
    assert sb.http.get(f"{JIRA}/issue/{created['key']}", headers=sb.jira).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        found = sb.http.get(f"{JIRA}/search/jql", headers=sb.jira, params=params).json()
        if found["issues"]:
            break
        assert time.monotonic() < deadline, "issue never became searchable"
    assert found["issues"][0]["key"] == created["key"]


def test_jira_comment_requires_adf_and_shows_on_issue(sb: Sandbox) -> None:
    new_issue(sb)
    plain = sb.http.post(f"{JIRA}/issue/SOC-1/comment", headers=sb.jira, json={"body": "hi"})
    assert plain.status_code == 400
    response = sb.http.post(
        f"{JIRA}/issue/SOC-1/comment", headers=sb.jira, json={"body": adf("hello")}
    )
    assert response.status_code == 201
    comment = response.json()
    assert comment["id"] and comment["created"] and comment["body"] == adf("hello")
    issue = sb.http.get(f"{JIRA}/issue/SOC-1", headers=sb.jira).json()
    assert issue["fields"]["comment"]["total"] == 1
    assert sb.http.get(f"{JIRA}/issue/SOC-99", headers=sb.jira).status_code == 404
    missing = sb.http.post(f"{JIRA}/issue/SOC-99/comment", headers=sb.jira, json={"body": adf("x")})
    assert missing.status_code == 404


def test_jira_transition_to_done_returns_204(sb: Sandbox) -> None:
    new_issue(sb)
    transitions = sb.http.get(f"{JIRA}/issue/SOC-1/transitions", headers=sb.jira).json()
    done = next(t["id"] for t in transitions["transitions"] if t["name"] == "Done")
    response = sb.http.post(
        f"{JIRA}/issue/SOC-1/transitions", headers=sb.jira, json={"transition": {"id": done}}
    )
    assert response.status_code == 204
    issue = sb.http.get(f"{JIRA}/issue/SOC-1", headers=sb.jira).json()
    assert issue["fields"]["status"]["name"] == "Done"
    bad = sb.http.post(
        f"{JIRA}/issue/SOC-1/transitions", headers=sb.jira, json={"transition": {"id": "999"}}
    )
    assert bad.status_code == 400
