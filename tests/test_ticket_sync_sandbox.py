"""Ticket state for the two-way sync, over real HTTP against the sandbox: the ServiceNow and Jira
simulators (states, resolutions, workflows, changelog, time filters, paging, lagging search) and
the clients' `changed_since`, `resolve` and `reopen`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from riposte.alerts.response import Priority, TicketDraft
from riposte.blocks import JiraCredentials, ServiceNowCredentials
from riposte.blocks.errors import ServiceRejectedError
from riposte.blocks.jira import JiraClient, jql_date
from riposte.blocks.servicenow import ServiceNowClient
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.config import SandboxConfig

INCIDENTS = "/servicenow/api/now/table/incident"
JIRA = "/jira/rest/api/3"
DATA_POLICY = {
    "error": {
        "message": "Operation Failed",
        "detail": "Data Policy Exception: \n\tThe following fields are mandatory: "
        "Resolution code, Resolution notes",
    },
    "status": "failure",
}


@pytest.fixture
def snow_block(sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig) -> Any:
    return sandbox_blocks(sandbox_url, sandbox_config)["riposte-servicenow"]


@pytest.fixture
def jira_block(sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig) -> Any:
    # Search keeps up with writes unless a test says otherwise.
    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0}).raise_for_status()
    return sandbox_blocks(sandbox_url, sandbox_config)["riposte-jira"]


@pytest.fixture
def snow(sandbox_config: SandboxConfig) -> httpx.Auth:
    return httpx.BasicAuth(sandbox_config.servicenow_user, sandbox_config.servicenow_password)


@pytest.fixture
def jira_auth(sandbox_config: SandboxConfig) -> httpx.Auth:
    return httpx.BasicAuth(sandbox_config.jira_email, sandbox_config.jira_api_token)


def _draft(key: str, summary: str = "[Defender] Suspicious PowerShell") -> TicketDraft:
    return TicketDraft(
        correlation_key=key,
        summary=summary,
        description="details",
        priority=Priority.HIGH,
        source_label="Microsoft Defender (graph)",
    )


def _snow_record(sandbox: httpx.Client, number: str) -> dict[str, Any]:
    held = sandbox.get("/_sandbox/servicenow/incidents").json()
    (found,) = [h for h in held if h["record"]["number"] == number]
    return found


def _issue(sandbox: httpx.Client, auth: httpx.Auth, key: str, **params: str) -> dict[str, Any]:
    response = sandbox.get(f"{JIRA}/issue/{key}", auth=auth, params=params)
    response.raise_for_status()
    return dict(response.json())


def _new_issue(
    sandbox: httpx.Client, auth: httpx.Auth, labels: list[str], issue_type: str = "Task"
) -> str:
    fields = {
        "project": {"key": "SEC"},
        "summary": "x",
        "issuetype": {"name": issue_type},
        "labels": labels,
    }
    response = sandbox.post(f"{JIRA}/issue", auth=auth, json={"fields": fields})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def _transitions(sandbox: httpx.Client, auth: httpx.Auth, key: str) -> dict[str, dict[str, Any]]:
    response = sandbox.get(
        f"{JIRA}/issue/{key}/transitions", auth=auth, params={"expand": "transitions.fields"}
    )
    return {t["id"]: t for t in response.json()["transitions"]}


def _wait_for_next_second() -> None:
    """ServiceNow keeps times to the second: two writes a second apart have different times."""
    time.sleep(1.05 - (time.time() % 1))


# --- ServiceNow simulator ---------------------------------------------------------------------


def test_servicenow_resolution_needs_code_and_notes_and_records_who_resolved(
    sandbox: httpx.Client, snow: httpx.Auth, sandbox_config: SandboxConfig
) -> None:
    created = sandbox.post(INCIDENTS, auth=snow, json={"correlation_id": "riposte-graph-1"})
    sys_id = created.json()["result"]["sys_id"]
    refused = sandbox.patch(f"{INCIDENTS}/{sys_id}", auth=snow, json={"state": "6"})
    assert (refused.status_code, refused.json()) == (403, DATA_POLICY)
    half = sandbox.patch(
        f"{INCIDENTS}/{sys_id}", auth=snow, json={"state": 6, "close_code": "Duplicate"}
    )
    assert half.status_code == 403
    assert half.json()["error"]["detail"].endswith("mandatory: Resolution notes")
    record = sandbox.get(f"{INCIDENTS}/{sys_id}", auth=snow).json()["result"]
    assert (record["state"], record["close_code"], record["sys_mod_count"]) == ("1", "", "0")

    resolved = sandbox.patch(
        f"{INCIDENTS}/{sys_id}",
        auth=snow,
        json={"state": 6, "close_code": "Solution provided", "close_notes": "blocked at proxy"},
        params={"sysparm_fields": "state,active,resolved_at,resolved_by.user_name,sys_updated_by"},
    ).json()["result"]
    assert resolved["state"] == "6" and resolved["active"] == "false"
    assert resolved["resolved_by.user_name"] == sandbox_config.servicenow_user
    assert resolved["sys_updated_by"] == sandbox_config.servicenow_user
    assert datetime.strptime(resolved["resolved_at"], "%Y-%m-%d %H:%M:%S")
    # A create straight into Resolved meets the same data policy.
    direct = sandbox.post(INCIDENTS, auth=snow, json={"state": "7", "close_code": "Duplicate"})
    assert direct.status_code == 403
    assert len(sandbox.get("/_sandbox/servicenow/incidents").json()) == 1


def test_servicenow_reopen_clears_the_resolution_and_a_closed_incident_stays_closed(
    sandbox: httpx.Client, snow: httpx.Auth, sandbox_config: SandboxConfig
) -> None:
    number = sandbox.post(INCIDENTS, auth=snow, json={}).json()["result"]["number"]
    sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/resolve",
        json={"close_code": "Known error", "close_notes": "known", "user": "alice.analyst"},
    ).raise_for_status()
    record = _snow_record(sandbox, number)["record"]
    sys_id = record["sys_id"]
    assert (record["state"], record["sys_updated_by"]) == ("6", "alice.analyst")
    reopened = sandbox.patch(
        f"{INCIDENTS}/{sys_id}",
        auth=snow,
        json={"state": "2"},
        params={"sysparm_exclude_reference_link": "true"},
    ).json()["result"]
    assert (reopened["state"], reopened["active"], reopened["reopen_count"]) == ("2", "true", "1")
    assert reopened["close_code"] == reopened["close_notes"] == reopened["resolved_at"] == ""
    assert reopened["resolved_by"] == ""
    assert reopened["reopened_by"] and reopened["reopened_time"]
    assert reopened["sys_updated_by"] == sandbox_config.servicenow_user

    sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/resolve",
        json={"close_code": "Duplicate", "close_notes": "dup", "state": "closed"},
    ).raise_for_status()
    closed = _snow_record(sandbox, number)["record"]
    assert (closed["state"], closed["active"]) == ("7", "false") and closed["closed_at"]
    # Closed incidents are read-only to the itil role: the field is dropped, the answer is 200.
    kept = sandbox.patch(f"{INCIDENTS}/{sys_id}", auth=snow, json={"state": "2"})
    assert kept.status_code == 200 and kept.json()["result"]["state"] == "7"
    assert _snow_record(sandbox, number)["record"]["sys_mod_count"] == closed["sys_mod_count"]
    again = sandbox.post(f"/_sandbox/servicenow/incidents/{number}/reopen", json={})
    assert again.status_code == 409


def test_servicenow_a_write_that_changes_nothing_is_no_update(
    sandbox: httpx.Client, snow: httpx.Auth
) -> None:
    record = sandbox.post(INCIDENTS, auth=snow, json={"urgency": "2"}).json()["result"]
    _wait_for_next_second()
    same = sandbox.patch(f"{INCIDENTS}/{record['sys_id']}", auth=snow, json={"urgency": 2})
    after = same.json()["result"]
    assert (after["sys_mod_count"], after["sys_updated_on"]) == ("0", record["sys_updated_on"])
    noted = sandbox.patch(f"{INCIDENTS}/{record['sys_id']}", auth=snow, json={"work_notes": "n"})
    assert noted.json()["result"]["sys_mod_count"] == "1"
    assert noted.json()["result"]["sys_updated_on"] > record["sys_updated_on"]


def test_servicenow_query_by_update_time_in_the_forms_clients_send(
    sandbox: httpx.Client, snow: httpx.Auth
) -> None:
    times = []
    for n in range(3):
        if n:
            _wait_for_next_second()
        result = sandbox.post(INCIDENTS, auth=snow, json={"short_description": f"n{n}"})
        times.append(result.json()["result"]["sys_updated_on"])
    middle_day, middle_time = times[1].split(" ")

    def descriptions(query: str) -> list[str]:
        response = sandbox.get(
            INCIDENTS,
            auth=snow,
            params={"sysparm_query": query, "sysparm_fields": "short_description"},
        )
        assert response.status_code == 200
        return [r["short_description"] for r in response.json()["result"]]

    generated = f"javascript:gs.dateGenerate('{middle_day}','{middle_time}')"
    assert descriptions(f"sys_updated_on>={generated}^ORDERBYsys_updated_on") == ["n1", "n2"]
    assert descriptions(f"sys_updated_on>{times[1]}") == ["n2"]
    assert descriptions(f"sys_updated_on<={generated}^ORDERBYDESCsys_updated_on") == ["n1", "n0"]
    assert descriptions(f"sys_updated_on>=javascript:gs.dateGenerate('{middle_day}','start')") == [
        "n0",
        "n1",
        "n2",
    ]
    # A value the instance cannot evaluate drops the term, which then matches everything.
    assert len(descriptions("sys_updated_on>=javascript:gs.notAFunction()")) == 3
    assert len(descriptions("sys_updated_on>=yesterday")) == 3


def test_servicenow_display_values_and_dot_walked_user_fields(
    sandbox: httpx.Client, snow: httpx.Auth
) -> None:
    number = sandbox.post(INCIDENTS, auth=snow, json={"urgency": 1}).json()["result"]["number"]
    sandbox.post(
        f"/_sandbox/servicenow/incidents/{number}/resolve",
        json={"close_code": "User error", "close_notes": "n", "user": "bob.analyst"},
    ).raise_for_status()
    sys_id = _snow_record(sandbox, number)["record"]["sys_id"]
    url = f"{INCIDENTS}/{sys_id}"
    fields = "state,urgency,resolved_by,resolved_by.user_name,close_code"
    every = sandbox.get(
        url, auth=snow, params={"sysparm_display_value": "all", "sysparm_fields": fields}
    ).json()["result"]
    assert every["state"] == {"display_value": "Resolved", "value": "6"}
    assert every["urgency"] == {"display_value": "1 - High", "value": "1"}
    assert every["resolved_by"]["display_value"] == "bob.analyst"
    assert every["resolved_by"]["link"].endswith(f"/sys_user/{every['resolved_by']['value']}")
    assert every["resolved_by.user_name"] == {
        "display_value": "bob.analyst",
        "value": "bob.analyst",
    }
    shown = sandbox.get(
        url,
        auth=snow,
        params={
            "sysparm_display_value": "true",
            "sysparm_fields": fields,
            "sysparm_exclude_reference_link": "true",
        },
    ).json()["result"]
    assert shown == {
        "state": "Resolved",
        "urgency": "1 - High",
        "resolved_by": "bob.analyst",
        "resolved_by.user_name": "bob.analyst",
        "close_code": "User error",
    }


def test_sandbox_analyst_controls_for_servicenow(sandbox: httpx.Client, snow: httpx.Auth) -> None:
    number = sandbox.post(INCIDENTS, auth=snow, json={}).json()["result"]["number"]
    control = f"/_sandbox/servicenow/incidents/{number}"
    not_a_choice = sandbox.post(f"{control}/resolve", json={"close_code": "Fixed it"})
    assert not_a_choice.status_code == 400 and "Solution provided" in not_a_choice.json()["choices"]
    no_notes = sandbox.post(f"{control}/resolve", json={"close_code": "Solution provided"})
    assert no_notes.status_code == 403
    assert no_notes.json()["error"]["detail"].endswith("mandatory: Resolution notes")
    note = sandbox.post(f"{control}/notes", json={"text": "looking", "user": "carol"})
    assert note.json()["journal"][-1] == {
        **note.json()["journal"][-1],
        "element": "work_notes",
        "value": "looking",
        "sys_created_by": "carol",
    }
    assert note.json()["record"]["sys_updated_by"] == "carol"
    reopen_open = sandbox.post(f"{control}/reopen", json={"user": "carol"})
    assert reopen_open.status_code == 409
    assert sandbox.post(f"{control}/resolve", json={"close_code": "X"}).status_code == 400
    missing = sandbox.post("/_sandbox/servicenow/incidents/INC0999999/reopen", json={})
    assert missing.status_code == 404


# --- Jira simulator -------------------------------------------------------------------------


def test_jira_workflows_have_their_own_transition_ids_and_resolution_screens(
    sandbox: httpx.Client, jira_block: JiraCredentials, jira_auth: httpx.Auth
) -> None:
    task = _new_issue(sandbox, jira_auth, ["riposte"])
    incident = _new_issue(sandbox, jira_auth, ["riposte"], "Incident")
    assert set(_transitions(sandbox, jira_auth, task)) == {"21", "31"}  # global, not to itself
    offered = _transitions(sandbox, jira_auth, incident)
    assert set(offered) == {"4", "5", "2"}
    assert offered["5"]["to"]["statusCategory"]["key"] == "done" and offered["5"]["hasScreen"]
    names = [v["name"] for v in offered["5"]["fields"]["resolution"]["allowedValues"]]
    assert names == ["Done", "Won't Do", "Duplicate", "Cannot Reproduce"]
    assert _issue(sandbox, jira_auth, incident)["fields"]["status"]["name"] == "Open"

    def move(key: str, body: dict[str, Any]) -> httpx.Response:
        return sandbox.post(f"{JIRA}/issue/{key}/transitions", auth=jira_auth, json=body)

    wrong_workflow = move(incident, {"transition": {"id": "31"}})
    assert wrong_workflow.status_code == 400
    assert wrong_workflow.json() == {
        "errorMessages": ["Transition id '31' is not valid for this issue."],
        "errors": {},
    }
    bad_name = move(incident, {"transition": {"id": "5"}, "fields": {"resolution": {"name": "?"}}})
    assert bad_name.status_code == 400 and "resolution" in bad_name.json()["errors"]
    resolved = move(
        incident, {"transition": {"id": "5"}, "fields": {"resolution": {"name": "won't do"}}}
    )
    assert resolved.status_code == 204 and resolved.content == b""
    fields = _issue(sandbox, jira_auth, incident)["fields"]
    assert fields["status"]["name"] == "Resolved"
    assert fields["status"]["statusCategory"]["key"] == "done"
    assert fields["resolution"]["name"] == "Won't Do" and fields["resolutiondate"]
    assert set(_transitions(sandbox, jira_auth, incident)) == {"701", "3"}
    no_screen = move(incident, {"transition": {"id": "701"}, "fields": {"resolution": {"id": 1}}})
    assert no_screen.status_code == 400
    assert no_screen.json()["errors"] == {
        "resolution": "Field 'resolution' cannot be set. It is not on the appropriate screen,"
        " or unknown."
    }
    assert move(incident, {"transition": {"id": "3"}}).status_code == 204
    fields = _issue(sandbox, jira_auth, incident)["fields"]
    assert fields["status"]["name"] == "Reopened"
    assert fields["status"]["statusCategory"]["key"] == "new"
    assert fields["resolution"] is None and fields["resolutiondate"] is None
    # The simplified workflow's Done sets Done when no resolution is given.
    assert move(task, {"transition": {"id": "31"}}).status_code == 204
    assert _issue(sandbox, jira_auth, task)["fields"]["resolution"]["name"] == "Done"


def test_jira_changelog_pages_oldest_first_with_each_author(
    sandbox: httpx.Client, jira_block: JiraCredentials, jira_auth: httpx.Auth
) -> None:
    key = _new_issue(sandbox, jira_auth, ["riposte"])
    me = sandbox.get(f"{JIRA}/myself", auth=jira_auth).json()
    sandbox.post(f"{JIRA}/issue/{key}/transitions", auth=jira_auth, json={"transition": {"id": 21}})
    done = sandbox.post(
        f"/_sandbox/jira/issues/{key}/done",
        json={"resolution": "Duplicate", "author": "Alice Analyst", "comment": "same as SEC-0"},
    ).json()
    alice = done["author"]
    sandbox.post(f"/_sandbox/jira/issues/{key}/reopen", json={"author": "Bob"}).raise_for_status()

    first = sandbox.get(
        f"{JIRA}/issue/{key}/changelog", auth=jira_auth, params={"maxResults": 2}
    ).json()
    assert (first["total"], first["isLast"], first["startAt"]) == (3, False, 0)
    assert "startAt=2" in first["nextPage"]
    second = sandbox.get(first["nextPage"], auth=jira_auth).json()
    assert second["isLast"] is True and "nextPage" not in second
    histories = first["values"] + second["values"]
    assert [h["author"]["accountId"] for h in histories[:2]] == [me["accountId"], alice]
    assert histories[2]["author"]["displayName"] == "Bob"
    items = {i["field"]: i for i in histories[1]["items"]}
    assert (items["status"]["fromString"], items["status"]["toString"]) == ("In Progress", "Done")
    assert (items["resolution"]["fromString"], items["resolution"]["toString"]) == (
        None,
        "Duplicate",
    )
    assert {i["field"]: i["toString"] for i in histories[2]["items"]} == {
        "status": "In Progress",
        "resolution": None,
    }
    expanded = _issue(sandbox, jira_auth, key, expand="changelog", fields="status")
    assert expanded["changelog"]["total"] == 3
    assert [h["id"] for h in expanded["changelog"]["histories"]] == [h["id"] for h in histories]
    # Comments are not history: the last one is read newest first, by an unknown order refused.
    newest = sandbox.get(
        f"{JIRA}/issue/{key}/comment",
        auth=jira_auth,
        params={"orderBy": "-created", "maxResults": 1},
    ).json()
    assert newest["total"] == 1 and newest["comments"][0]["author"]["accountId"] == alice
    bad = sandbox.get(f"{JIRA}/issue/{key}/comment", auth=jira_auth, params={"orderBy": "author"})
    assert bad.status_code == 400 and bad.json()["errorMessages"]


def test_jira_dates_are_read_in_the_account_time_zone_to_the_minute(
    sandbox: httpx.Client, jira_block: JiraCredentials, jira_auth: httpx.Auth
) -> None:
    zone = "Pacific/Marquesas"  # UTC-09:30
    sandbox.post("/_sandbox/jira/settings", json={"time_zone": zone}).raise_for_status()
    before = datetime.now(UTC) - timedelta(minutes=1)
    key = _new_issue(sandbox, jira_auth, ["zoned"])
    updated = _issue(sandbox, jira_auth, key)["fields"]["updated"]
    assert updated.endswith("-0930")
    assert sandbox.get(f"{JIRA}/myself", auth=jira_auth).json()["timeZone"] == zone

    def keys(jql: str) -> list[str]:
        response = sandbox.get(f"{JIRA}/search/jql", auth=jira_auth, params={"jql": jql})
        assert response.status_code == 200, response.text
        return [i["key"] for i in response.json()["issues"]]

    local = before.astimezone(ZoneInfo(zone))
    assert keys(f'labels = zoned AND updated >= "{local:%Y-%m-%d %H:%M}"') == [key]
    assert keys(f'labels = zoned AND updated >= "{local:%Y/%m/%d %H:%M}"') == [key]
    # The UTC wall time, read in the account's zone, is an instant nine and a half hours later.
    assert keys(f'labels = zoned AND updated >= "{before:%Y-%m-%d %H:%M}"') == []
    assert keys('labels = zoned AND updated >= "-5m" ORDER BY updated ASC') == [key]
    assert keys('labels = zoned AND updated < "-5m"') == []
    seconds = sandbox.get(
        f"{JIRA}/search/jql",
        auth=jira_auth,
        params={"jql": f'labels = zoned AND updated >= "{local:%Y-%m-%d %H:%M:%S}"'},
    )
    assert seconds.status_code == 400
    assert "'yyyy-MM-dd HH:mm'" in seconds.json()["errorMessages"][0]
    assert keys('labels = zoned AND updated >= "2001-01-01"') == [key]
    assert sandbox.post("/_sandbox/jira/settings", json={"time_zone": "Mars/Olympus"}).is_error


def test_jira_search_sees_a_change_only_once_indexed(
    sandbox: httpx.Client, jira_block: JiraCredentials, jira_auth: httpx.Auth
) -> None:
    key = _new_issue(sandbox, jira_auth, ["lagged"])
    issue_id = _issue(sandbox, jira_auth, key)["id"]
    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0.6}).raise_for_status()
    sandbox.post(f"/_sandbox/jira/issues/{key}/done", json={}).raise_for_status()
    jql = "labels = lagged AND status = Done"
    stale = sandbox.get(f"{JIRA}/search/jql", auth=jira_auth, params={"jql": jql}).json()
    assert stale["issues"] == []
    # Still found by its old status, with its fields read as they are now.
    old = sandbox.get(
        f"{JIRA}/search/jql",
        auth=jira_auth,
        params={"jql": 'labels = lagged AND status = "To Do"', "fields": "status"},
    ).json()
    assert [i["fields"]["status"]["name"] for i in old["issues"]] == ["Done"]
    reconciled = sandbox.post(
        f"{JIRA}/search/jql", auth=jira_auth, json={"jql": jql, "reconcileIssues": [issue_id]}
    ).json()
    assert [i["key"] for i in reconciled["issues"]] == [key]
    time.sleep(0.7)
    fresh = sandbox.get(f"{JIRA}/search/jql", auth=jira_auth, params={"jql": jql}).json()
    assert [i["key"] for i in fresh["issues"]] == [key]


# --- clients --------------------------------------------------------------------------------


def test_servicenow_client_reads_changes_with_who_made_them(
    sandbox: httpx.Client, snow: httpx.Auth, snow_block: ServiceNowCredentials
) -> None:
    client = snow_block.get_client()
    assert isinstance(client, ServiceNowClient)
    since = datetime.now(UTC)
    ours = [client.find_or_create(_draft(f"riposte-graph-sync-{n}")) for n in range(3)]
    sandbox.post(INCIDENTS, auth=snow, json={"correlation_id": "other-tool-1"}).raise_for_status()
    sandbox.post(
        f"/_sandbox/servicenow/incidents/{ours[0].key}/resolve",
        json={
            "close_code": "Not Solved (Too Costly)",
            "close_notes": "accepted risk",
            "user": "alice.analyst",
        },
    ).raise_for_status()

    changes = {c.ticket.key: c for c in client.changed_since(since)}
    assert set(changes) == {t.key for t in ours}
    analyst = changes[ours[0].key]
    assert (analyst.status, analyst.resolution, analyst.resolution_notes) == (
        "resolved",
        "Not Solved (Too Costly)",
        "accepted risk",
    )
    assert (analyst.updated_by, analyst.resolved_by, analyst.by_riposte) == (
        "alice.analyst",
        "alice.analyst",
        False,
    )
    assert analyst.correlation_key == "riposte-graph-sync-0"
    assert analyst.ticket.id == ours[0].id and not analyst.ticket.created
    assert analyst.updated_at.tzinfo == UTC and analyst.updated_at >= since.replace(microsecond=0)
    untouched = changes[ours[1].key]
    assert (untouched.status, untouched.resolution, untouched.by_riposte) == ("open", None, True)
    assert untouched.updated_by == snow_block.username
    _wait_for_next_second()
    assert client.changed_since(datetime.now(UTC)) == []
    with pytest.raises(ValueError, match="time zone"):
        client.changed_since(datetime.now())  # naive: refused


def test_servicenow_client_resolves_and_reopens_compare_then_write(
    sandbox: httpx.Client, snow_block: ServiceNowCredentials
) -> None:
    client = snow_block.get_client()
    ticket = client.find_or_create(_draft("riposte-graph-resolve"))
    done = client.resolve(ticket, "Solution provided", "Closed by Riposte [code]<b>x</b>[/code]")
    assert (done.changed, done.status) == (True, "resolved")
    record = _snow_record(sandbox, ticket.key)["record"]
    assert (record["state"], record["close_code"]) == ("6", "Solution provided")
    assert record["close_notes"] == "Closed by Riposte (code)<b>x</b>(/code)"
    mod_count = record["sys_mod_count"]
    again = client.resolve(ticket, "Duplicate", "again")
    assert (again.changed, again.status) == (False, "resolved")
    assert "Resolved already (Solution provided)" in again.detail
    assert _snow_record(sandbox, ticket.key)["record"]["sys_mod_count"] == mod_count
    (change,) = client.changed_since(datetime.now(UTC) - timedelta(minutes=5))
    assert (change.by_riposte, change.resolved_by) == (True, snow_block.username)
    with pytest.raises(ValueError):
        client.resolve(ticket, "Solution provided", " ")

    back = client.reopen(ticket, "The alert is active again in Defender")
    assert (back.changed, back.status) == (True, "open")
    record = _snow_record(sandbox, ticket.key)["record"]
    assert (record["state"], record["close_code"], record["reopen_count"]) == ("2", "", "1")
    assert client.notes(ticket)[-1] == "The alert is active again in Defender"
    still = client.reopen(ticket, "twice")
    assert (still.changed, still.status) == (False, "open") and "open already" in still.detail
    assert client.notes(ticket)[-1] != "twice"

    sandbox.post(
        f"/_sandbox/servicenow/incidents/{ticket.key}/resolve",
        json={"close_code": "Duplicate", "close_notes": "dup", "state": "closed"},
    ).raise_for_status()
    closed = client.reopen(ticket, "too late")
    assert (closed.changed, closed.status) == (False, "closed")
    assert "cannot be reopened" in closed.detail
    assert client.resolve(ticket, "Duplicate", "x").changed is False


def test_servicenow_changed_since_reads_every_page_by_update_time(
    sandbox: httpx.Client, snow_block: ServiceNowCredentials
) -> None:
    client = snow_block.get_client()
    since = datetime.now(UTC)
    tickets = [client.find_or_create(_draft(f"riposte-graph-page-{n}")) for n in range(7)]
    sandbox.delete("/_sandbox/requests").raise_for_status()
    crowded = client.changed_since(since, page_size=2)  # one or two seconds: pages by offset
    assert sorted(c.ticket.key for c in crowded) == sorted(t.key for t in tickets)
    log = sandbox.get("/_sandbox/requests").json()
    assert sum(log["routes"]["servicenow"].values()) >= 4
    stamps = [c.updated_at for c in crowded]
    assert stamps == sorted(stamps)

    _wait_for_next_second()
    mark = datetime.now(UTC)
    for n, ticket in enumerate(tickets[:5]):
        if n:
            _wait_for_next_second()
        sandbox.post(
            f"/_sandbox/servicenow/incidents/{ticket.key}/notes",
            json={"text": f"checked {n}", "user": "dave"},
        ).raise_for_status()
    later = client.changed_since(mark, page_size=2)  # a second each: pages by update time
    assert [c.ticket.key for c in later] == [t.key for t in tickets[:5]]
    assert {c.updated_by for c in later} == {"dave"}


def test_jira_client_reads_changes_in_the_account_time_zone_with_who_made_them(
    sandbox: httpx.Client, jira_block: JiraCredentials, jira_auth: httpx.Auth
) -> None:
    zone = "Pacific/Marquesas"  # UTC-09:30: a UTC wall time read there is 9.5 hours later
    sandbox.post("/_sandbox/jira/settings", json={"time_zone": zone}).raise_for_status()
    client = jira_block.get_client()
    assert isinstance(client, JiraClient)
    since = datetime.now(UTC)
    ours = [client.find_or_create(_draft(f"riposte-graph-j{n}")) for n in range(3)]
    _new_issue(sandbox, jira_auth, ["other-tool"])
    alice = sandbox.post(
        f"/_sandbox/jira/issues/{ours[0].key}/done",
        json={"resolution": "Won't Do", "author": "Alice Analyst", "comment": "benign"},
    ).json()["author"]
    sandbox.post(
        f"/_sandbox/jira/issues/{ours[1].key}/comments", json={"text": "on it", "author": "Bob"}
    ).raise_for_status()

    changes = {c.ticket.key: c for c in client.changed_since(since)}
    assert set(changes) == {t.key for t in ours}
    assert client.changed_since(since, project="SEC") == sorted(
        changes.values(), key=lambda c: (c.updated_at, c.ticket.key)
    )
    me = client.myself()["accountId"]
    resolved = changes[ours[0].key]
    assert (resolved.status, resolved.resolution, resolved.resolution_notes) == (
        "resolved",
        "Won't Do",
        None,
    )
    assert (resolved.updated_by, resolved.resolved_by, resolved.by_riposte) == (alice, alice, False)
    assert resolved.correlation_key == "riposte-graph-j0"
    commented = changes[ours[1].key]
    assert commented.status == "open" and commented.by_riposte is False
    assert commented.updated_by not in (me, alice)
    untouched = changes[ours[2].key]
    assert (untouched.updated_by, untouched.by_riposte) == (me, True)
    assert untouched.updated_at.tzinfo == UTC

    # The search opens the window at the minute before (in the account's time); the overlap
    # is dropped.
    assert client.changed_since(datetime.now(UTC)) == []
    assert jql_date(datetime(2026, 12, 6, 12, 0, 30, tzinfo=UTC), "Asia/Kolkata") == (
        "2026-12-06 17:30"
    )

    # 02:30 happens twice in Paris on 2026-10-25 (00:30 and 01:30 UTC): the literal is read
    # an hour earlier, so that either reading Jira makes of it is not after the moment.
    def paris(hour: int) -> str:
        return jql_date(datetime(2026, 10, 25, hour, 30, tzinfo=UTC), "Europe/Paris")

    assert [paris(0), paris(1), paris(2)] == [
        "2026-10-25 01:30",
        "2026-10-25 02:30",
        "2026-10-25 03:30",
    ]


def test_jira_changed_since_reads_every_page_and_waits_for_the_index(
    sandbox: httpx.Client, jira_block: JiraCredentials
) -> None:
    client = jira_block.get_client()
    since = datetime.now(UTC)
    tickets = [client.create(_draft(f"riposte-graph-jp{n}")) for n in range(5)]
    sandbox.delete("/_sandbox/requests").raise_for_status()
    changes = client.changed_since(since, page_size=2)
    assert sorted(c.ticket.key for c in changes) == sorted(t.key for t in tickets)
    routes = sandbox.get("/_sandbox/requests").json()["routes"]["jira"]
    assert sum(n for route, n in routes.items() if route.endswith("/search/jql")) == 3

    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0.8}).raise_for_status()
    mark = datetime.now(UTC)
    late = client.create(_draft("riposte-graph-jp-late"))
    assert client.changed_since(mark) == []  # not indexed yet
    time.sleep(0.9)
    (found,) = client.changed_since(mark)
    assert (found.ticket.key, found.status, found.by_riposte) == (late.key, "open", True)


def test_jira_client_resolves_and_reopens_through_each_workflow(
    sandbox: httpx.Client, jira_block: JiraCredentials, jira_auth: httpx.Auth
) -> None:
    client = jira_block.get_client()
    task = client.create(_draft("riposte-graph-wf-task"))
    done = client.resolve(task, "Won't Do", "Benign: see https://evil.example/x")
    assert (done.changed, done.status) == (True, "resolved")
    fields = _issue(sandbox, jira_auth, task.key)["fields"]
    assert (fields["status"]["name"], fields["resolution"]["name"]) == ("Done", "Won't Do")
    (comment,) = fields["comment"]["comments"]
    texts = [n for p in comment["body"]["content"] for n in p["content"]]
    assert all("marks" not in n for n in texts)  # the URL stays text
    again = client.resolve(task, "Done", "again")
    assert again.changed is False and "already" in again.detail
    history = sandbox.get(f"{JIRA}/issue/{task.key}/changelog", auth=jira_auth).json()["values"]
    assert len(history) == 1 and history[0]["author"]["accountId"] == client.myself()["accountId"]
    back = client.reopen(task, "Active again in Defender")
    assert (back.changed, back.status) == (True, "open")
    fields = _issue(sandbox, jira_auth, task.key)["fields"]
    assert (fields["status"]["name"], fields["resolution"]) == ("In Progress", None)
    assert client.reopen(task, "x").changed is False

    incidents = jira_block.model_copy(update={"issue_type": "Incident"}).get_client()
    incident = incidents.create(_draft("riposte-graph-wf-incident"))
    with pytest.raises(ServiceRejectedError, match="not offered"):
        incidents.resolve(incident, "Fixed", "n")
    assert _issue(sandbox, jira_auth, incident.key)["fields"]["status"]["name"] == "Open"
    resolved = incidents.resolve(incident, "duplicate", "dup of SEC-1")
    assert (resolved.changed, resolved.status) == (True, "resolved")
    fields = _issue(sandbox, jira_auth, incident.key)["fields"]
    assert (fields["status"]["name"], fields["resolution"]["name"]) == ("Resolved", "Duplicate")
    assert incidents.reopen(incident, "").status == "open"
    assert _issue(sandbox, jira_auth, incident.key)["fields"]["status"]["name"] == "Reopened"
    sandbox.post(
        f"/_sandbox/jira/issues/{incident.key}/done", json={"status": "Closed"}
    ).raise_for_status()
    closed = incidents.resolve(incident, "Done", "n")
    assert (closed.changed, closed.status) == (False, "closed")
    recent = incidents.changed_since(datetime.now(UTC) - timedelta(minutes=5))
    (change,) = [c for c in recent if c.ticket.key == incident.key]
    assert (change.status, change.resolution) == ("closed", "Done")


def test_both_clients_read_back_what_the_sync_compares(
    snow_block: ServiceNowCredentials, jira_block: JiraCredentials
) -> None:
    for block in (snow_block, jira_block):
        client = block.get_client()
        draft = _draft("riposte-t-rule-abc-20261206120000-1").model_copy(
            update={"group_key": "riposte-t-rule-abc", "description": "Line one."}
        )
        created = client.create(draft)
        (change,) = client.changed_since(datetime.now(UTC) - timedelta(minutes=1))
        assert change.ticket == created.model_copy(update={"created": False})
        assert change.correlation_key == "riposte-t-rule-abc-20261206120000-1"
        assert client.correlation_key(created) == change.correlation_key
        assert client.description(created) == "Line one."
        assert client.by_key(created.key) == change.ticket
        assert client.by_key("INC9999999" if block is snow_block else "SEC-999") is None
