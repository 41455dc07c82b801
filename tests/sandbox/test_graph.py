"""The Graph simulator: security alerts_v2 (auth, list, update, comments)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from riposte.sandbox.app import create_app
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.samples import sample_graph_alerts
from tests.sandbox.helpers import (
    ALERTS,
    GRAPH_SCOPE,
    GRAPH_TIME_RE,
    Sandbox,
    alert,
    graph_ticks,
)
from tests.servers import serve_in_thread

# --- graph: auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer not-a-token", "Basic dXNlcjpwYXNz"]
)
def test_graph_rejects_missing_or_unknown_token_with_invalid_authentication_token(
    sb: Sandbox, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = sb.http.get(ALERTS, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_graph_rejects_expired_token_so_clients_must_refresh(sb: Sandbox) -> None:
    headers = sb.graph()
    assert sb.http.get(ALERTS, headers=headers).status_code == 200
    sb.http.post("/_sandbox/identity/expire-tokens")
    response = sb.http.get(ALERTS, headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]
    assert sb.http.get(ALERTS, headers=sb.graph()).status_code == 200


def test_graph_rejects_token_issued_for_another_resource(sb: Sandbox) -> None:
    token = sb.token("https://api.securitycenter.microsoft.com/.default")
    response = sb.http.get(ALERTS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_tokens_expire_after_the_configured_lifetime() -> None:
    config = SandboxConfig(token_lifetime_seconds=1)
    with serve_in_thread(create_app(config)) as base, httpx.Client(base_url=base) as http:
        token = http.post(
            f"/login/{config.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": config.client_id,
                "client_secret": config.client_secret,
                "grant_type": "client_credentials",
                "scope": GRAPH_SCOPE,
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 5
        while http.get(ALERTS, headers=headers).status_code == 200:
            assert time.monotonic() < deadline, "token never expired"
        assert http.get(ALERTS, headers=headers).status_code == 401


# --- graph: list ------------------------------------------------------------------------------


def test_graph_list_pages_by_next_link_as_documented_or_without_as_some_tenants(
    sb: Sandbox,
) -> None:
    """`@odata.nextLink` while results remain (the pages cover every alert once), absolute,
    keeping the query; no link at all when told to, as some tenants were reported to do."""
    sb.load_alerts([alert(f"a{i}") for i in range(5)])
    body = sb.http.get(ALERTS, headers=sb.graph(), params={"$top": "2"}).json()
    assert body["@odata.context"].endswith("$metadata#security/alerts_v2")
    assert len(body["value"]) == 2
    seen = [a["id"] for a in body["value"]]
    while "@odata.nextLink" in body:
        link = body["@odata.nextLink"]
        assert link.startswith(sb.base) and "%24top=2" in link
        body = sb.http.get(link, headers=sb.graph()).json()
        seen += [a["id"] for a in body["value"]]
    assert sorted(seen) == [f"a{i}" for i in range(5)] and len(seen) == 5
    sb.http.post("/_sandbox/graph/settings", json={"next_link": False}).raise_for_status()
    body = sb.http.get(ALERTS, headers=sb.graph(), params={"$top": "2"}).json()
    assert len(body["value"]) == 2 and "@odata.nextLink" not in body


def test_graph_filter_on_last_update_time_pages_by_watermark(sb: Sandbox) -> None:
    sb.load_alerts(
        [
            alert("old", lastUpdateDateTime="2024-05-01T10:00:00.1234567Z"),
            alert("edge", lastUpdateDateTime="2024-05-01T11:00:00.0000001Z"),
            alert("new", lastUpdateDateTime="2024-05-01T12:00:00Z"),
        ]
    )
    response = sb.http.get(
        ALERTS,
        headers=sb.graph(),
        params={"$filter": "lastUpdateDateTime gt 2024-05-01T11:00:00Z"},
    )
    assert response.status_code == 200
    assert sorted(a["id"] for a in response.json()["value"]) == ["edge", "new"]


def test_graph_filter_joins_comparisons_with_and(sb: Sandbox) -> None:
    sb.load_alerts(
        [
            alert("h-new", severity="high", status="new"),
            alert("h-res", severity="high", status="resolved"),
            alert("m-new", severity="medium", status="new"),
        ]
    )
    response = sb.http.get(
        ALERTS,
        headers=sb.graph(),
        params={"$filter": "severity eq 'high' and status ne 'resolved'"},
    )
    assert [a["id"] for a in response.json()["value"]] == ["h-new"]


def test_graph_filter_on_datetime_with_offset_and_severity_order(sb: Sandbox) -> None:
    sb.load_alerts(
        [
            alert("low", severity="low", createdDateTime="2024-05-01T09:00:00Z"),
            alert("high", severity="high", createdDateTime="2024-05-01T09:30:00Z"),
        ]
    )
    response = sb.http.get(
        ALERTS,
        headers=sb.graph(),
        params={"$filter": "createdDateTime ge 2024-05-01T11:15:00+02:00 and severity ge 'medium'"},
    )
    assert [a["id"] for a in response.json()["value"]] == ["high"]


def test_graph_filter_classification_eq_null_matches_live_payloads(sb: Sandbox) -> None:
    sb.load_alerts(
        [alert("open", classification=None), alert("fp", classification="falsePositive")]
    )
    response = sb.http.get(ALERTS, headers=sb.graph(), params={"$filter": "classification eq null"})
    assert [a["id"] for a in response.json()["value"]] == ["open"]


@pytest.mark.parametrize(
    "expression",
    [
        "investigationState eq 'running'",
        "colour eq 'red'",
        "severity eq high",
        "lastUpdateDateTime gt '2024-05-01T00:00:00Z'",
        "lastUpdateDateTime gt 2024-05-01T00:00:00",
        "severity eq 'critical'",
        "severity eq 'high' or status eq 'new'",
        "(severity eq 'high')",
        "severity eq",
    ],
)
def test_graph_unsupported_or_malformed_filter_is_bad_request(sb: Sandbox, expression: str) -> None:
    response = sb.http.get(ALERTS, headers=sb.graph(), params={"$filter": expression})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["message"].startswith("Invalid filter clause")


def test_graph_orderby_top_and_skip(sb: Sandbox) -> None:
    sb.load_alerts([alert(f"a{i}", createdDateTime=f"2024-05-01T10:0{i}:00Z") for i in range(5)])
    headers = sb.graph()

    def ids(**params: str) -> list[str]:
        response = sb.http.get(ALERTS, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["value"]]

    # $orderby is not a documented option of this list: checked, not applied, so the order is
    # the service's own (a client that relied on it would page wrongly)...
    unsorted = ids(**{"$orderby": "createdDateTime asc"})
    assert sorted(unsorted) == ["a0", "a1", "a2", "a3", "a4"] != unsorted
    assert ids(**{"$top": "2", "$skip": "2"}) == unsorted[2:4]
    # ...unless the sandbox is told to behave like a tenant that applies it.
    sb.http.post("/_sandbox/graph/settings", json={"honor_orderby": True}).raise_for_status()
    assert ids(**{"$orderby": "createdDateTime asc"}) == ["a0", "a1", "a2", "a3", "a4"]
    assert ids(**{"$orderby": "createdDateTime desc", "$top": "2"}) == ["a4", "a3"]
    assert ids(**{"$orderby": "createdDateTime asc", "$top": "2", "$skip": "2"}) == ["a2", "a3"]


@pytest.mark.parametrize(
    "params",
    [{"$top": "2001"}, {"$top": "-1"}, {"$top": "ten"}, {"$orderby": "severity desc"}],
)
def test_graph_top_over_2000_or_bad_orderby_is_bad_request(
    sb: Sandbox, params: dict[str, str]
) -> None:
    response = sb.http.get(ALERTS, headers=sb.graph(), params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_graph_hides_evolvable_enum_members_unless_client_prefers_them(sb: Sandbox) -> None:
    sb.load_alerts(sample_graph_alerts(datetime.now(UTC)))
    api_alert = "dc2517458936573611_3f1e4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b"

    plain = sb.http.get(f"{ALERTS}/{api_alert}", headers=sb.graph()).json()
    assert plain["serviceSource"] == "unknownFutureValue"
    assert plain["detectionSource"] == "unknownFutureValue"

    opted_in = sb.http.get(f"{ALERTS}/{api_alert}", headers=sb.graph(prefer_unknown=True)).json()
    assert opted_in["serviceSource"] == "microsoftDefenderForCloud"
    assert opted_in["detectionSource"] == "microsoftDefenderForApiManagement"

    listed = sb.http.get(ALERTS, headers=sb.graph()).json()["value"]
    sources = {a["id"]: a["serviceSource"] for a in listed}
    assert sources[api_alert] == "unknownFutureValue"
    assert sources["da637578995287051192_756343937"] == "microsoftDefenderForEndpoint"

    # The stored alert keeps the real value: only what goes on the wire is masked.
    stored = {a["id"]: a for a in sb.http.get("/_sandbox/graph/alerts").json()}
    assert stored[api_alert]["serviceSource"] == "microsoftDefenderForCloud"


def test_graph_get_unknown_alert_is_not_found(sb: Sandbox) -> None:
    response = sb.http.get(f"{ALERTS}/nope", headers=sb.graph())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


# --- graph: update and comments ---------------------------------------------------------------


def test_graph_patch_returns_full_updated_alert_and_bumps_last_update(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1", lastUpdateDateTime="2024-05-01T10:00:00.0000000Z")])
    response = sb.http.patch(
        f"{ALERTS}/a1",
        headers=sb.graph(),
        json={
            "status": "resolved",
            "classification": "falsePositive",
            "determination": "notMalicious",
            "assignedTo": "soc@contoso.com",
        },
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["title"] == "alert a1"
    assert updated["status"] == "resolved"
    assert updated["classification"] == "falsePositive"
    assert updated["determination"] == "notMalicious"
    assert updated["assignedTo"] == "soc@contoso.com"
    assert GRAPH_TIME_RE.match(updated["lastUpdateDateTime"])
    assert updated["lastUpdateDateTime"] > "2024-05-01T10:00:00.0000000Z"
    assert updated["resolvedDateTime"] == updated["lastUpdateDateTime"]


@pytest.mark.parametrize(
    "body",
    [
        {"severity": "low"},
        {"status": "closed"},
        {"status": "Resolved"},
        {"classification": "FalsePositive"},
        {"determination": "nope"},
        {"assignedTo": 42},
    ],
)
def test_graph_patch_rejects_unwritable_fields_and_invalid_values(
    sb: Sandbox, body: dict[str, Any]
) -> None:
    sb.load_alerts([alert("a1")])
    response = sb.http.patch(f"{ALERTS}/a1", headers=sb.graph(), json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_graph_patch_of_unknown_alert_is_not_found(sb: Sandbox) -> None:
    response = sb.http.patch(f"{ALERTS}/ghost", headers=sb.graph(), json={"status": "resolved"})
    assert response.status_code == 404


def test_graph_comment_returns_whole_comment_list_and_bumps_last_update(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1", lastUpdateDateTime="2024-05-01T10:00:00.0000000Z")])
    headers = sb.graph()
    for text in ("first", "second"):
        response = sb.http.post(
            f"{ALERTS}/a1/comments",
            headers=headers,
            json={"@odata.type": "microsoft.graph.security.alertComment", "comment": text},
        )
        assert response.status_code == 200
    comments = response.json()["value"]
    assert [c["comment"] for c in comments] == ["first", "second"]
    assert all(
        c["createdByDisplayName"] and GRAPH_TIME_RE.match(c["createdDateTime"]) for c in comments
    )
    stored = sb.http.get(f"{ALERTS}/a1", headers=headers).json()
    assert [c["comment"] for c in stored["comments"]] == ["first", "second"]
    assert stored["lastUpdateDateTime"] == comments[-1]["createdDateTime"]


@pytest.mark.parametrize("body", [{}, {"comment": ""}, {"comment": "   "}, {"comment": 3}])
def test_graph_comment_without_text_is_bad_request(sb: Sandbox, body: dict[str, Any]) -> None:
    sb.load_alerts([alert("a1")])
    response = sb.http.post(f"{ALERTS}/a1/comments", headers=sb.graph(), json=body)
    assert response.status_code == 400


def test_graph_last_update_times_strictly_increase_across_alerts(sb: Sandbox) -> None:
    sb.load_alerts([alert("a"), alert("b")])
    headers = sb.graph()
    stamps = [a["lastUpdateDateTime"] for a in sb.http.get("/_sandbox/graph/alerts").json()]
    for i in range(30):
        target = "a" if i % 2 else "b"
        if i % 3:
            response = sb.http.patch(
                f"{ALERTS}/{target}", headers=headers, json={"status": "inProgress"}
            )
            stamps.append(response.json()["lastUpdateDateTime"])
        else:
            sb.http.post(f"{ALERTS}/{target}/comments", headers=headers, json={"comment": str(i)})
            stamps.append(
                sb.http.get(f"{ALERTS}/{target}", headers=headers).json()["lastUpdateDateTime"]
            )
    assert all(GRAPH_TIME_RE.match(s) for s in stamps)
    ticks = [graph_ticks(s) for s in stamps]
    # At least a microsecond apart, so clients parsing into datetimes still see them increase.
    assert all(b - a >= 10 for a, b in zip(ticks, ticks[1:], strict=False))


def test_loaded_alerts_keep_their_ids_and_get_missing_timestamps(sb: Sandbox) -> None:
    sb.load_alerts([{"id": "given-id", "title": "t", "severity": "low"}])
    (stored,) = sb.http.get("/_sandbox/graph/alerts").json()
    assert stored["id"] == "given-id"
    assert GRAPH_TIME_RE.match(stored["createdDateTime"])
    assert GRAPH_TIME_RE.match(stored["lastUpdateDateTime"])
    assert stored["comments"] == []
