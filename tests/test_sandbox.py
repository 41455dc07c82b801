"""The sandbox simulators behave like the real APIs, over real HTTP on loopback."""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from riposte.sandbox.app import create_app
from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.samples import sample_alerts_by_source, sample_graph_alerts
from tests.servers import serve_in_thread

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
ALERTS = "/graph/v1.0/security/alerts_v2"
INCIDENTS = "/servicenow/api/now/table/incident"
JIRA = "/jira/rest/api/3"
GRAPH_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


def adf(text: str) -> dict[str, Any]:
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    }


def graph_ticks(text: str) -> int:
    ticks = parse_ticks(text)
    assert ticks is not None, text
    return ticks


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Sandbox:
    base: str
    config: SandboxConfig
    http: httpx.Client

    def token(self, scope: str = GRAPH_SCOPE) -> str:
        response = self.http.post(
            f"/login/{self.config.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret,
                "grant_type": "client_credentials",
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def graph(self, prefer_unknown: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token()}"}
        if prefer_unknown:
            headers["Prefer"] = "include-unknown-enum-members"
        return headers

    @property
    def snow(self) -> dict[str, str]:
        return basic(self.config.servicenow_user, self.config.servicenow_password)

    @property
    def jira(self) -> dict[str, str]:
        return basic(self.config.jira_email, self.config.jira_api_token)

    @property
    def slack_path(self) -> str:
        return f"/slack/services/{self.config.slack_hook_path}"

    @property
    def teams_path(self) -> str:
        return f"/teams/workflows/{self.config.teams_flow_id}/triggers/manual/paths/invoke"

    def teams_params(self, sig: str | None = None) -> dict[str, str]:
        return {"api-version": "2016-06-01", "sig": sig or self.config.teams_sig}

    def load_alerts(self, alerts: list[dict[str, Any]]) -> None:
        response = self.http.post("/_sandbox/graph/alerts", json=alerts)
        assert response.json()["loaded"] == len(alerts)

    def fault(self, **spec: Any) -> str:
        response = self.http.post("/_sandbox/faults", json=spec)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def random_config() -> SandboxConfig:
    word = secrets.token_hex
    return SandboxConfig(
        tenant_id=word(8),
        client_id=word(8),
        client_secret=word(16),
        servicenow_user=word(6),
        servicenow_password=word(16),
        jira_email=f"{word(4)}@example.org",
        jira_api_token=word(16),
        jira_projects=["SOC", "OPS"],
        slack_hook_path=f"T{word(4).upper()}/B{word(4).upper()}/{word(12)}",
        teams_flow_id=word(8),
        teams_sig=word(16),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, SandboxConfig]]:
    config = random_config()
    with serve_in_thread(create_app(config)) as base:
        yield base, config


@pytest.fixture
def sb(server: tuple[str, SandboxConfig]) -> Iterator[Sandbox]:
    base, config = server
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/_sandbox/reset").status_code == 200
        yield Sandbox(base, config, http)


def alert(alert_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": alert_id, "title": f"alert {alert_id}", "severity": "medium", **fields}


# --- identity ---------------------------------------------------------------------------------


def test_token_endpoint_issues_bearer_token_with_configured_lifetime_and_counts_it(
    sb: Sandbox,
) -> None:
    first, second = sb.token(), sb.token()
    assert first != second
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    )
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == sb.config.token_lifetime_seconds
    assert sb.http.get("/_sandbox/identity").json()["tokens_issued"] == 3


@pytest.mark.parametrize("wrong", ["tenant", "client_id", "client_secret"])
def test_token_endpoint_rejects_wrong_credentials_with_401_invalid_client(
    sb: Sandbox, wrong: str
) -> None:
    form = {
        "client_id": sb.config.client_id,
        "client_secret": sb.config.client_secret,
        "grant_type": "client_credentials",
        "scope": GRAPH_SCOPE,
    }
    tenant = sb.config.tenant_id
    if wrong == "tenant":
        tenant = "another-tenant"
    else:
        form[wrong] = "wrong-" + secrets.token_hex(4)
    response = sb.http.post(f"/login/{tenant}/oauth2/v2.0/token", data=form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"].startswith("AADSTS")
    assert sb.config.client_secret not in response.text
    assert sb.http.get("/_sandbox/identity").json()["tokens_issued"] == 0


def test_wrong_secret_error_names_aadsts7000215_without_echoing_the_secret(sb: Sandbox) -> None:
    sent = "my-leaked-" + secrets.token_hex(8)
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sb.config.client_id,
            "client_secret": sent,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    )
    assert response.status_code == 401
    assert "AADSTS7000215" in response.json()["error_description"]
    assert sent not in response.text


@pytest.mark.parametrize("grant_type", [None, "password", "authorization_code"])
def test_token_endpoint_requires_client_credentials_grant(
    sb: Sandbox, grant_type: str | None
) -> None:
    form = {
        "client_id": sb.config.client_id,
        "client_secret": sb.config.client_secret,
        "scope": GRAPH_SCOPE,
    }
    if grant_type:
        form["grant_type"] = grant_type
    response = sb.http.post(f"/login/{sb.config.tenant_id}/oauth2/v2.0/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_token_endpoint_reads_form_bodies_only_so_json_is_refused(sb: Sandbox) -> None:
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        json={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    )
    assert response.status_code == 400


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


# --- samples ----------------------------------------------------------------------------------


def test_sample_alerts_look_like_graph_payloads() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    alerts = sample_graph_alerts(now)
    assert len(alerts) == 4
    for payload in alerts:
        assert re.match(r"^[a-z]{2}[0-9a-f]+(_[-0-9a-f]+)?$", payload["id"])
        assert isinstance(payload["incidentId"], str)
        assert payload["status"] == "new"
        assert payload["classification"] is None and payload["determination"] is None
        assert payload["comments"] == []
        for name in (
            "createdDateTime",
            "lastUpdateDateTime",
            "firstActivityDateTime",
            "lastActivityDateTime",
        ):
            assert GRAPH_TIME_RE.match(payload[name]), name
        created = graph_ticks(payload["createdDateTime"])
        assert graph_ticks("2024-05-01T11:50:00Z") <= created < graph_ticks("2024-05-01T12:00:00Z")
        assert all(
            e["@odata.type"].startswith("#microsoft.graph.security.") for e in payload["evidence"]
        )
    mde, api_ip, api_enum, identity = alerts
    assert mde["severity"] == "high"
    kinds = {e["@odata.type"].rsplit(".", 1)[1]: e for e in mde["evidence"]}
    assert {"deviceEvidence", "processEvidence", "fileEvidence", "userEvidence"} <= set(kinds)
    assert kinds["fileEvidence"]["fileDetails"]["sha256"]
    assert kinds["userEvidence"]["userAccount"]["userPrincipalName"]
    assert api_ip["detectorId"] == "API_AccessFromSuspiciousIP"
    assert api_ip["detectionSource"] == "microsoftDefenderForApiManagement"
    resource = next(e for e in api_ip["evidence"] if "azureResourceEvidence" in e["@odata.type"])
    assert "/providers/Microsoft.ApiManagement/service/" in resource["resourceId"]
    assert resource["resourceId"].endswith("/operations/get-order")
    assert (api_enum["detectorId"], api_enum["severity"]) == ("API_ParameterEnumeration", "medium")
    assert identity["severity"] == "medium"
    assert {e["@odata.type"] for e in identity["evidence"]} == {
        "#microsoft.graph.security.userEvidence",
        "#microsoft.graph.security.ipEvidence",
    }


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


# --- jira -------------------------------------------------------------------------------------


def new_issue(sb: Sandbox, **fields: Any) -> httpx.Response:
    body = {
        "project": {"key": "SOC"},
        "summary": "Suspicious PowerShell",
        "issuetype": {"name": "Task"},
        "labels": ["riposte-graph-a1"],
        "priority": {"name": "High"},
        "description": adf("details"),
    }
    body.update(fields)
    return sb.http.post(f"{JIRA}/issue", headers=sb.jira, json={"fields": body})


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


# --- slack and teams --------------------------------------------------------------------------


def test_slack_webhook_answers_plain_text_ok_and_records_message(sb: Sandbox) -> None:
    payload = {
        "text": "fallback",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}],
    }
    response = sb.http.post(sb.slack_path, json=payload)
    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers["content-type"].startswith("text/plain")
    (message,) = sb.http.get("/_sandbox/slack/messages").json()
    assert message["text"] == "fallback"
    assert message["blocks"] == payload["blocks"]


def test_slack_unknown_hook_is_404_no_service(sb: Sandbox) -> None:
    response = sb.http.post("/slack/services/T0/B0/revoked", json={"text": "hi"})
    assert response.status_code == 404
    assert response.text == "no_service"


@pytest.mark.parametrize("content", [b"not json", b"{}", b'{"text": ""}', b"[1]"])
def test_slack_payload_without_text_or_blocks_is_invalid_payload(
    sb: Sandbox, content: bytes
) -> None:
    response = sb.http.post(
        sb.slack_path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.text == "invalid_payload"
    assert sb.http.get("/_sandbox/slack/messages").json() == []


def teams_card() -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "TextBlock", "text": "hello"}],
                },
            }
        ],
    }


def test_teams_workflow_accepts_adaptive_card_with_202_and_empty_body(sb: Sandbox) -> None:
    response = sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card())
    assert response.status_code == 202
    assert response.content == b""
    (message,) = sb.http.get("/_sandbox/teams/messages").json()
    assert message["payload"] == teams_card()


def test_teams_workflow_rejects_wrong_flow_sig_and_body(sb: Sandbox) -> None:
    wrong_flow = sb.http.post(
        "/teams/workflows/other/triggers/manual/paths/invoke",
        params=sb.teams_params(),
        json=teams_card(),
    )
    assert wrong_flow.status_code == 404
    wrong_sig = sb.http.post(sb.teams_path, params=sb.teams_params("bad"), json=teams_card())
    assert wrong_sig.status_code == 401
    assert wrong_sig.json()["error"]["code"] == "DirectApiAuthorizationRequired"
    no_sig = sb.http.post(sb.teams_path, params={"api-version": "2016-06-01"}, json=teams_card())
    assert no_sig.status_code == 401
    not_a_card = sb.http.post(sb.teams_path, params=sb.teams_params(), json={"text": "hello"})
    assert not_a_card.status_code == 400
    assert sb.http.get("/_sandbox/teams/messages").json() == []


# --- faults -----------------------------------------------------------------------------------


def test_fault_answers_429_with_retry_after_n_times_then_normally(sb: Sandbox) -> None:
    sb.fault(service="slack", method="POST", status=429, retry_after=2, times=2)
    answers = [sb.http.post(sb.slack_path, json={"text": "hi"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "2"
    assert answers[0].text == "rate_limited"
    assert answers[2].text == "ok"
    assert len(sb.http.get("/_sandbox/slack/messages").json()) == 1


def test_every_servicenow_429_says_when_its_hourly_window_resets(sb: Sandbox) -> None:
    """ServiceNow's rate limits are per hour and a 429 always carries Retry-After (the shared
    reference): without a value of the fault's own, the top of the next hour."""
    sb.fault(service="servicenow", status=429, times=1)
    answer = sb.http.get(INCIDENTS, headers=sb.snow)
    assert answer.status_code == 429
    wait = int(answer.headers["retry-after"])
    assert 0 < wait <= 3600
    assert int(answer.headers["x-ratelimit-reset"]) - wait == pytest.approx(time.time(), abs=2)


def test_faults_answer_in_each_services_error_shape(sb: Sandbox) -> None:
    sb.fault(service="graph", status=429, retry_after=1, times=1)
    sb.fault(service="servicenow", status=429, retry_after=3, times=1)
    sb.fault(service="jira", status=503, times=1)
    sb.fault(service="identity", status=500, times=1)
    graph = sb.http.get(ALERTS)
    assert graph.status_code == 429
    assert graph.json()["error"]["code"] == "TooManyRequests"
    snow = sb.http.get(INCIDENTS, headers=sb.snow)
    assert snow.status_code == 429 and snow.headers["retry-after"] == "3"
    assert snow.json()["error"]["message"] == "Rate limit exceeded"
    assert snow.json()["status"] == "failure"
    jira = sb.http.get(f"{JIRA}/issue/SOC-1", headers=sb.jira)
    assert jira.status_code == 503 and jira.json()["errorMessages"]
    identity = sb.http.post(f"/login/{sb.config.tenant_id}/oauth2/v2.0/token", data={})
    assert identity.status_code == 500 and identity.json()["error"] == "temporarily_unavailable"


def test_fault_matches_only_its_method_and_path(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1")])
    headers = sb.graph()
    sb.fault(service="graph", method="PATCH", path_contains="/alerts_v2/a1", status=500)
    assert sb.http.get(f"{ALERTS}/a1", headers=headers).status_code == 200
    assert sb.http.patch(f"{ALERTS}/a1", headers=headers, json={}).status_code == 500
    assert sb.http.patch(f"{ALERTS}/a1", headers=headers, json={}).status_code == 500
    sb.http.delete("/_sandbox/faults")
    assert sb.http.patch(f"{ALERTS}/a1", headers=headers, json={}).status_code == 200


def test_fault_with_only_a_delay_slows_the_answer_down(sb: Sandbox) -> None:
    sb.fault(service="teams", delay=0.4, times=1)
    started = time.monotonic()
    response = sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card())
    assert response.status_code == 202
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card())
    assert time.monotonic() - started < 0.4


def test_delayed_fault_makes_a_short_client_timeout_fire(sb: Sandbox) -> None:
    sb.fault(service="slack", delay=1.0, status=503, times=1)
    with pytest.raises(httpx.ReadTimeout):
        sb.http.post(sb.slack_path, json={"text": "hi"}, timeout=0.2)


def test_faults_are_listed_with_remaining_uses_and_cleared(sb: Sandbox) -> None:
    once = sb.fault(service="jira", status=500, times=2)
    forever = sb.fault(service="graph", status=503)
    listed = {f["id"]: f for f in sb.http.get("/_sandbox/faults").json()}
    assert listed[once]["remaining"] == 2 and listed[forever]["remaining"] is None
    sb.http.get(f"{JIRA}/issue/X-1", headers=sb.jira)
    listed = {f["id"]: f for f in sb.http.get("/_sandbox/faults").json()}
    assert listed[once]["remaining"] == 1
    sb.http.get(f"{JIRA}/issue/X-1", headers=sb.jira)
    assert [f["id"] for f in sb.http.get("/_sandbox/faults").json()] == [forever]
    assert sb.http.delete(f"/_sandbox/faults/{forever}").status_code == 200
    assert sb.http.get("/_sandbox/faults").json() == []


@pytest.mark.parametrize(
    "spec",
    [
        {"service": "graph"},
        {"service": "nope", "status": 500},
        {"service": "graph", "status": 99},
        {"service": "graph", "status": 500, "times": 0},
    ],
)
def test_fault_specification_is_validated(sb: Sandbox, spec: dict[str, Any]) -> None:
    assert sb.http.post("/_sandbox/faults", json=spec).status_code == 422


# --- control ----------------------------------------------------------------------------------


def test_reset_clears_alerts_tickets_messages_faults_and_tokens(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1")])
    headers = sb.graph()
    sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": "x"})
    new_issue(sb)
    sb.http.post(sb.slack_path, json={"text": "hi"})
    sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card())
    sb.fault(service="graph", status=500, path_contains="never-matches")

    assert sb.http.post("/_sandbox/reset").json() == {"status": "reset"}

    assert sb.http.get("/_sandbox/graph/alerts").json() == []
    assert sb.http.get("/_sandbox/servicenow/incidents").json() == []
    assert sb.http.get("/_sandbox/jira/issues").json() == []
    assert sb.http.get("/_sandbox/slack/messages").json() == []
    assert sb.http.get("/_sandbox/teams/messages").json() == []
    assert sb.http.get("/_sandbox/faults").json() == []
    assert sb.http.get("/_sandbox/identity").json()["tokens_issued"] == 0
    assert sb.http.get(ALERTS, headers=headers).status_code == 401
    created = sb.http.post(INCIDENTS, headers=sb.snow, json={})
    assert created.json()["result"]["number"] == "INC0010001"
    assert new_issue(sb).json()["key"] == "SOC-1"


def test_request_counter_counts_calls_per_route_including_faulted_ones(sb: Sandbox) -> None:
    sb.load_alerts([alert("a1")])
    headers = sb.graph()
    sb.fault(service="graph", status=429, retry_after=0, times=1)
    assert sb.http.get(f"{ALERTS}/a1", headers=headers).status_code == 429
    assert sb.http.get(f"{ALERTS}/a1", headers=headers).status_code == 200
    sb.http.get("/_sandbox/health")
    counts = sb.http.get("/_sandbox/requests").json()
    assert counts["services"] == {"identity": 1, "graph": 2}
    assert counts["routes"]["graph"] == {"GET /graph/v1.0/security/alerts_v2/{alert_id}": 2}
    assert counts["statuses"]["graph"] == {"429": 1, "200": 1}
    sb.http.delete("/_sandbox/requests")
    assert sb.http.get("/_sandbox/requests").json()["services"] == {}


def test_health(sb: Sandbox) -> None:
    assert sb.http.get("/_sandbox/health").json() == {"status": "ok"}


def test_no_answer_ever_echoes_a_configured_credential(sb: Sandbox) -> None:
    config = sb.config
    # Not the ServiceNow user name: the instance writes it in sys_created_by/sys_updated_by,
    # which is how a write is attributed.
    secrets_ = [
        config.client_secret,
        config.servicenow_password,
        config.jira_api_token,
        config.jira_email,
        config.teams_sig,
        config.slack_hook_path,
    ]
    sb.load_alerts([alert("a1")])
    answers = [
        sb.http.post(
            f"/login/{config.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": config.client_id,
                "client_secret": config.client_secret + "x",
                "grant_type": "client_credentials",
                "scope": GRAPH_SCOPE,
            },
        ),
        sb.http.get(ALERTS, headers={"Authorization": f"Bearer {config.client_secret}"}),
        sb.http.post(f"{ALERTS}/a1/comments", headers=sb.graph(), json={"comment": "x"}),
        sb.http.post(INCIDENTS, headers=sb.snow, json={"short_description": "x"}),
        sb.http.get(INCIDENTS, headers=basic(config.servicenow_user, "wrong")),
        new_issue(sb),
        sb.http.get(f"{JIRA}/issue/SOC-1", headers=sb.jira),
        sb.http.post(f"{JIRA}/issue/SOC-1/comment", headers=sb.jira, json={"body": adf("x")}),
        sb.http.get(f"{JIRA}/myself", headers=sb.jira),
        sb.http.post(sb.slack_path, json={"text": "hi"}),
        sb.http.post(sb.teams_path, params=sb.teams_params(), json=teams_card()),
        sb.http.post(sb.teams_path, params=sb.teams_params("wrong"), json=teams_card()),
        sb.http.get("/_sandbox/requests"),
        sb.http.get("/_sandbox/servicenow/incidents"),
        sb.http.get("/_sandbox/jira/issues"),
    ]
    for answer in answers:
        text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in secrets_:
            assert secret not in text, (answer.request.url, secret)


def test_config_from_environment_overrides_defaults() -> None:
    config = SandboxConfig.from_env(
        {
            "RIPOSTE_SANDBOX_CLIENT_SECRET": "s3cret",
            "RIPOSTE_SANDBOX_JIRA_PROJECTS": "SEC, OPS",
            "RIPOSTE_SANDBOX_TOKEN_LIFETIME_SECONDS": "60",
        }
    )
    assert config.client_secret == "s3cret"
    assert config.jira_projects == ["SEC", "OPS"]
    assert config.token_lifetime_seconds == 60
    assert config.tenant_id == SandboxConfig().tenant_id


def test_config_urls_point_at_each_simulator(sb: Sandbox) -> None:
    urls = sb.config.urls(sb.base + "/")
    assert sb.http.post(urls["slack_webhook"], json={"text": "hi"}).text == "ok"
    assert sb.http.post(urls["teams_webhook"], json=teams_card()).status_code == 202
    token = sb.http.post(
        urls["token"],
        data={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    ).json()["access_token"]
    listed = sb.http.get(
        f"{urls['graph']}/v1.0/security/alerts_v2", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200
    assert sb.http.get(f"{urls['servicenow']}/api/now/table/incident", headers=sb.snow).is_success
    assert sb.http.get(f"{urls['jira']}/rest/api/3/myself", headers=sb.jira).is_success


# --- identity: one token per resource ---------------------------------------------------------

MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default"
MDCA_SCOPE = "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default"
ARM_SCOPE = "https://management.azure.com/.default"
MDE_ALERTS = "/mde/api/alerts"
MDCA_ALERTS = "/mdca/api/v1/alerts/"


def bearer(sb: Sandbox, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.token(scope)}"}


def legacy(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Token {sb.config.cloud_apps_legacy_token}"}


def arm_alerts_path(subscription: str) -> str:
    return f"/arm/subscriptions/{subscription}/providers/Microsoft.Security/alerts"


ARM_VERSION = {"api-version": "2022-01-01"}


def test_token_for_a_resource_the_tenant_does_not_know_is_refused_as_aadsts500011(
    sb: Sandbox,
) -> None:
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": "https://api.example.invalid/.default",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_resource"
    assert "AADSTS500011" in response.json()["error_description"]


def test_identity_counts_tokens_per_audience(sb: Sandbox) -> None:
    for scope in (GRAPH_SCOPE, MDE_SCOPE, MDE_SCOPE, MDCA_SCOPE, ARM_SCOPE):
        sb.token(scope)
    assert sb.http.get("/_sandbox/identity").json()["audiences"] == {
        "https://graph.microsoft.com": 1,
        "https://api.securitycenter.microsoft.com": 2,
        "05a65629-4c1b-48c1-a78b-804c4abdd4af": 1,
        "https://management.azure.com": 1,
    }


@pytest.mark.parametrize(
    ("api", "scopes_refused", "scope_accepted"),
    [
        (
            "mde",
            [GRAPH_SCOPE, ARM_SCOPE, MDCA_SCOPE, "https://api.security.microsoft.com/.default"],
            MDE_SCOPE,
        ),
        ("mdca", [GRAPH_SCOPE, MDE_SCOPE, ARM_SCOPE], MDCA_SCOPE),
        ("arm", [GRAPH_SCOPE, MDE_SCOPE, MDCA_SCOPE], ARM_SCOPE),
    ],
)
def test_each_defender_api_accepts_only_a_token_for_its_own_resource(
    sb: Sandbox, api: str, scopes_refused: list[str], scope_accepted: str
) -> None:
    path = {
        "mde": MDE_ALERTS,
        "mdca": MDCA_ALERTS,
        "arm": arm_alerts_path(sb.config.subscription_ids[0]),
    }[api]
    for scope in scopes_refused:
        response = sb.http.get(path, headers=bearer(sb, scope), params=ARM_VERSION)
        assert response.status_code == 401, scope
    accepted = sb.http.get(path, headers=bearer(sb, scope_accepted), params=ARM_VERSION)
    assert accepted.status_code == 200


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


# --- Defender for Cloud Apps -------------------------------------------------------------------


def mdca_alert(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "_id": f"{number:024x}",
        "title": f"alert {number}",
        "timestamp": 1714557600000 + number * 1000,
        "severityValue": 1,
        **fields,
    }


def load_mdca(sb: Sandbox, alerts: list[dict[str, Any]]) -> None:
    response = sb.http.post("/_sandbox/mdca/alerts", json=alerts)
    assert response.json()["loaded"] == len(alerts)


@pytest.mark.parametrize("auth", ["legacy", "bearer"])
def test_mdca_accepts_the_legacy_token_and_an_entra_bearer(sb: Sandbox, auth: str) -> None:
    load_mdca(sb, [mdca_alert(1)])
    headers = legacy(sb) if auth == "legacy" else bearer(sb, MDCA_SCOPE)
    response = sb.http.get(MDCA_ALERTS, headers=headers)
    assert response.status_code == 200
    assert response.json()["data"][0]["_id"] == f"{1:024x}"


@pytest.mark.parametrize(
    "authorization", [None, "Token wrong", "Bearer not-a-token", "Basic dXNlcjpwYXNz"]
)
def test_mdca_refuses_missing_or_wrong_credentials_with_401(
    sb: Sandbox, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = sb.http.post(MDCA_ALERTS, headers=headers, json={})
    assert response.status_code == 401
    assert "detail" in response.json()


def test_mdca_list_pages_with_skip_limit_has_next_and_at_most_100(sb: Sandbox) -> None:
    load_mdca(sb, [mdca_alert(i) for i in range(130)])
    headers = legacy(sb)
    first = sb.http.post(MDCA_ALERTS, headers=headers, json={"skip": 0, "limit": 500}).json()
    assert (len(first["data"]), first["hasNext"], first["total"], first["max"]) == (
        100,
        True,
        130,
        100,
    )
    last = sb.http.post(MDCA_ALERTS, headers=headers, json={"skip": 100, "limit": 100}).json()
    assert (len(last["data"]), last["hasNext"]) == (30, False)
    by_get = sb.http.get(MDCA_ALERTS, headers=headers, params={"skip": "120", "limit": "5"})
    assert len(by_get.json()["data"]) == 5


def test_mdca_date_filter_takes_epoch_ms_and_sort_is_by_date(sb: Sandbox) -> None:
    load_mdca(sb, [mdca_alert(i) for i in range(6)])
    body = {
        "filters": {"date": {"gte": 1714557600000 + 3000}},
        "sortField": "date",
        "sortDirection": "asc",
    }
    response = sb.http.post(MDCA_ALERTS, headers=legacy(sb), json=body).json()
    assert [a["_id"] for a in response["data"]] == [f"{i:024x}" for i in (3, 4, 5)]
    assert isinstance(response["data"][0]["timestamp"], int)
    newest_first = sb.http.post(MDCA_ALERTS, headers=legacy(sb), json={}).json()["data"]
    assert newest_first[0]["_id"] == f"{5:024x}"


@pytest.mark.parametrize(
    "filters",
    [
        {"date": {"gte": "yesterday"}},
        {"severity": {"eq": ["HIGH"]}},
        {"nonsense": {"eq": 1}},
        {"date": {"after": 1}},
    ],
)
def test_mdca_invalid_filter_answers_the_captured_form_error(
    sb: Sandbox, filters: dict[str, Any]
) -> None:
    response = sb.http.post(MDCA_ALERTS, headers=legacy(sb), json={"filters": filters})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] is True
    assert body["filters"][0]["errorMessageCode"] == "CONSOLE_FORMS_NOT_VALID_VALUE"
    assert body["filters"][0]["error"].endswith("is not valid")


def test_mdca_fetch_read_and_404(sb: Sandbox) -> None:
    load_mdca(sb, [mdca_alert(7)])
    alert_id = f"{7:024x}"
    headers = legacy(sb)
    assert sb.http.get(f"{MDCA_ALERTS}{alert_id}/", headers=headers).json()["statusValue"] == 0
    assert sb.http.post(f"{MDCA_ALERTS}{alert_id}/read/", headers=headers).status_code == 200
    assert sb.http.get(f"{MDCA_ALERTS}{alert_id}/", headers=headers).json()["statusValue"] == 1
    missing = sb.http.get(f"{MDCA_ALERTS}{'f' * 24}/", headers=headers)
    assert missing.status_code == 404


def test_mdca_close_answers_the_count_and_the_ids_it_did_not_find(sb: Sandbox) -> None:
    load_mdca(sb, [mdca_alert(1), mdca_alert(2)])
    known, unknown = f"{1:024x}", "f" * 24
    response = sb.http.post(
        f"{MDCA_ALERTS}close_benign/",
        headers=legacy(sb),
        json={"filters": {"id": {"eq": [known, unknown]}}, "reasonId": 6, "comment": "test"},
    )
    assert response.status_code == 200
    assert response.json() == {"closed_benign": 1, "alertsNotFound": [unknown]}
    nothing = sb.http.post(
        f"{MDCA_ALERTS}close_false_positive/",
        headers=legacy(sb),
        json={"filters": {"id": {"eq": [unknown]}}},
    )
    assert nothing.status_code == 200  # not an error: only the count says nothing happened
    assert nothing.json() == {"closed_false_positive": 0, "alertsNotFound": [unknown]}
    alert = sb.http.get(f"{MDCA_ALERTS}{known}/", headers=legacy(sb)).json()
    assert (alert["resolutionStatusValue"], alert["comment"]) == (4, "test")


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("close_benign/", {}),
        ("close_benign/", {"filters": {}}),
        ("close_false_positive/", {"filters": {"id": {"eq": ["x"]}}, "reasonId": 6}),
    ],
)
def test_mdca_close_needs_filters_and_a_reason_of_its_kind(
    sb: Sandbox, endpoint: str, body: dict[str, Any]
) -> None:
    response = sb.http.post(f"{MDCA_ALERTS}{endpoint}", headers=legacy(sb), json=body)
    assert response.status_code == 400


def test_mdca_throttle_is_off_by_default_and_answers_429_without_retry_after_when_on(
    sb: Sandbox,
) -> None:
    assert sb.http.get("/_sandbox/mdca/throttle").json()["enabled"] is False
    headers = legacy(sb)
    assert all(sb.http.get(MDCA_ALERTS, headers=headers).status_code == 200 for _ in range(35))
    sb.http.post(
        "/_sandbox/mdca/throttle", json={"enabled": True, "requests": 3, "window_seconds": 60}
    ).raise_for_status()
    answers = [sb.http.get(MDCA_ALERTS, headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert "retry-after" not in answers[3].headers
    sb.http.post("/_sandbox/mdca/throttle", json={"enabled": False}).raise_for_status()
    assert sb.http.get(MDCA_ALERTS, headers=headers).status_code == 200


# --- Defender for Cloud (ARM) ------------------------------------------------------------------


def arm_alert(
    subscription: str, name: str, generated: str, group: str = "rg-api"
) -> dict[str, Any]:
    return {
        "id": (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Security/"
            f"locations/westeurope/alerts/{name}"
        ),
        "name": name,
        "properties": {"alertType": "API_UnseenParam", "timeGeneratedUtc": generated},
    }


def load_arm(sb: Sandbox, alerts: list[dict[str, Any]]) -> list[str]:
    response = sb.http.post("/_sandbox/arm/alerts", json=alerts)
    assert response.json()["loaded"] == len(alerts)
    ids: list[str] = response.json()["ids"]
    return ids


def test_arm_requires_an_api_version_it_knows(sb: Sandbox) -> None:
    path = arm_alerts_path(sb.config.subscription_ids[0])
    headers = bearer(sb, ARM_SCOPE)
    missing = sb.http.get(path, headers=headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "MissingApiVersionParameter"
    wrong = sb.http.get(path, headers=headers, params={"api-version": "1999-01-01"})
    assert wrong.json()["error"]["code"] == "InvalidApiVersionParameter"


def test_arm_token_for_another_audience_is_refused_with_its_own_error_code(sb: Sandbox) -> None:
    response = sb.http.get(
        arm_alerts_path(sb.config.subscription_ids[0]),
        headers=bearer(sb, GRAPH_SCOPE),
        params=ARM_VERSION,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    assert "www-authenticate" in response.headers


def test_arm_list_pages_with_an_absolute_next_link_on_the_same_host(sb: Sandbox) -> None:
    subscription = sb.config.subscription_ids[0]
    load_arm(sb, [arm_alert(subscription, f"a{i}", f"2024-05-01T1{i}:00:00Z") for i in range(5)])
    sb.http.post("/_sandbox/arm/settings", json={"page_size": 2}).raise_for_status()
    headers = bearer(sb, ARM_SCOPE)
    page = sb.http.get(arm_alerts_path(subscription), headers=headers, params=ARM_VERSION).json()
    names = [a["name"] for a in page["value"]]
    pages = 1
    while "nextLink" in page:
        assert page["nextLink"].startswith(f"{sb.base}/arm/subscriptions/{subscription}/")
        assert "api-version=2022-01-01" in page["nextLink"]
        page = sb.http.get(page["nextLink"], headers=headers).json()
        names += [a["name"] for a in page["value"]]
        pages += 1
    assert pages == 3
    assert names == ["a4", "a3", "a2", "a1", "a0"]  # newest first: not the order a poll needs


def test_arm_get_and_state_changes_answer_204_with_no_body(sb: Sandbox) -> None:
    subscription = sb.config.subscription_ids[0]
    alert_id = load_arm(sb, [arm_alert(subscription, "s1", "2024-05-01T10:00:00Z")])[0]
    headers = bearer(sb, ARM_SCOPE)
    got = sb.http.get(
        alert_id.replace("/subscriptions", "/arm/subscriptions", 1),
        headers=headers,
        params=ARM_VERSION,
    )
    assert got.status_code == 200 and got.json()["properties"]["status"] == "Active"
    for action, status in [
        ("inProgress", "InProgress"),
        ("dismiss", "Dismissed"),
        ("activate", "Active"),
        ("resolve", "Resolved"),
    ]:
        response = sb.http.post(f"/arm{alert_id}/{action}", headers=headers, params=ARM_VERSION)
        assert response.status_code == 204 and response.content == b""
        alert = sb.http.get(f"/arm{alert_id}", headers=headers, params=ARM_VERSION).json()
        assert alert["properties"]["status"] == status


def test_arm_unknown_subscription_alert_and_action_are_404(sb: Sandbox) -> None:
    subscription = sb.config.subscription_ids[0]
    headers = bearer(sb, ARM_SCOPE)
    stranger = sb.http.get(
        arm_alerts_path("00000000-0000-0000-0000-000000000000"), headers=headers, params=ARM_VERSION
    )
    assert stranger.status_code == 404
    assert stranger.json()["error"]["code"] == "SubscriptionNotFound"
    missing = (
        f"/arm/subscriptions/{subscription}/providers/Microsoft.Security/locations/westeurope"
        "/alerts/none"
    )
    assert sb.http.get(missing, headers=headers, params=ARM_VERSION).status_code == 404
    assert (
        sb.http.post(f"{missing}/resolve", headers=headers, params=ARM_VERSION).status_code == 404
    )
    alert_id = load_arm(sb, [arm_alert(subscription, "s2", "2024-05-01T10:00:00Z")])[0]
    bogus = sb.http.post(f"/arm{alert_id}/explode", headers=headers, params=ARM_VERSION)
    assert bogus.status_code == 404


# --- samples and control of the new simulators -------------------------------------------------


def test_samples_of_every_source_have_each_apis_shape() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    samples = sample_alerts_by_source(now)
    assert set(samples) == {"graph", "defender_endpoint", "cloud_apps", "defender_cloud"}
    for mde in samples["defender_endpoint"]:
        assert mde["status"] == "New" and isinstance(mde["incidentId"], int)
        assert mde["severity"] in ("Informational", "Low", "Medium", "High")
        assert all("entityType" in e for e in mde["evidence"])
    assert any(m["category"] == "null" for m in samples["defender_endpoint"])
    for mdca in samples["cloud_apps"]:
        assert re.fullmatch(r"[0-9a-f]{24}", mdca["_id"])
        assert isinstance(mdca["timestamp"], int) and mdca["timestamp"] > 10**12
        assert isinstance(mdca["severityValue"], int) and mdca["entities"]
    assert any("policy" in m for m in samples["cloud_apps"])
    apis = {a["properties"]["alertType"]: a for a in samples["defender_cloud"]}
    assert {"API_AccessFromSuspiciousIP", "API_ParameterEnumeration"} <= set(apis)
    suspicious = apis["API_AccessFromSuspiciousIP"]
    assert suspicious["properties"]["severity"] == "High"
    extended = suspicious["properties"]["extendedProperties"]
    assert extended["Client IP address"] == "185.220.101.34"
    assert (
        "/providers/Microsoft.ApiManagement/service/"
        in extended["API Management operation resource"]
    )
    assert "/operations/" in extended["API Management operation resource"]
    assert suspicious["id"].endswith(f"/alerts/{suspicious['name']}")


def test_every_sample_loads_and_each_source_lists_its_own(sb: Sandbox) -> None:
    loaded = sb.http.post("/_sandbox/alerts/samples").json()
    assert {k: len(v) for k, v in loaded.items()} == {
        "graph": 4,
        "defender_endpoint": 3,
        "cloud_apps": 3,
        "defender_cloud": 4,
    }
    assert len(sb.http.get("/_sandbox/mde/alerts").json()) == 3
    assert len(sb.http.get("/_sandbox/mdca/alerts").json()) == 3
    assert len(sb.http.get("/_sandbox/arm/alerts").json()) == 4
    again = sb.http.post("/_sandbox/arm/alerts/samples").json()
    assert again["loaded"] == 4 and len(sb.http.get("/_sandbox/arm/alerts").json()) == 4


def test_loading_alerts_refuses_a_body_that_is_not_alerts(sb: Sandbox) -> None:
    for api in ("mde", "mdca", "arm"):
        assert sb.http.post(f"/_sandbox/{api}/alerts", json=[1, 2]).status_code == 400
    assert sb.http.post("/_sandbox/nosuch/alerts", json=[]).status_code == 422


def test_reset_clears_the_new_simulators_and_their_knobs(sb: Sandbox) -> None:
    sb.http.post("/_sandbox/alerts/samples").raise_for_status()
    sb.http.post("/_sandbox/mdca/throttle", json={"enabled": True, "requests": 1})
    sb.http.post("/_sandbox/arm/settings", json={"page_size": 1})
    sb.http.post("/_sandbox/reset").raise_for_status()
    for api in ("mde", "mdca", "arm"):
        assert sb.http.get(f"/_sandbox/{api}/alerts").json() == []
    assert sb.http.get("/_sandbox/mdca/throttle").json()["enabled"] is False
    assert sb.http.get("/_sandbox/arm/settings").json() == {"page_size": 100}


def test_request_counter_counts_the_new_simulators_by_route(sb: Sandbox) -> None:
    mde, mdca, arm = bearer(sb, MDE_SCOPE), legacy(sb), bearer(sb, ARM_SCOPE)
    sb.http.delete("/_sandbox/requests")
    sb.http.get(f"{MDE_ALERTS}/x", headers=mde)
    sb.http.post(MDCA_ALERTS, headers=mdca, json={})
    sb.http.get(arm_alerts_path(sb.config.subscription_ids[0]), headers=arm, params=ARM_VERSION)
    counts = sb.http.get("/_sandbox/requests").json()
    assert counts["services"] == {"mde": 1, "mdca": 1, "arm": 1}
    assert counts["routes"]["mde"] == {"GET /mde/api/alerts/{alert_id}": 1}
    assert counts["statuses"]["mde"] == {"404": 1}


def test_config_urls_point_at_the_new_simulators(sb: Sandbox) -> None:
    urls = sb.config.urls(sb.base)
    assert sb.http.get(f"{urls['mde']}/api/alerts", headers=bearer(sb, MDE_SCOPE)).is_success
    assert sb.http.get(f"{urls['mdca']}/api/v1/alerts/", headers=legacy(sb)).is_success
    listed = sb.http.get(
        f"{urls['arm']}/subscriptions/{sb.config.subscription_ids[0]}/providers/"
        "Microsoft.Security/alerts",
        headers=bearer(sb, ARM_SCOPE),
        params=ARM_VERSION,
    )
    assert listed.is_success


def test_new_simulators_never_echo_a_configured_credential(sb: Sandbox) -> None:
    secrets_ = [sb.config.client_secret, sb.config.cloud_apps_legacy_token]
    sb.http.post("/_sandbox/alerts/samples").raise_for_status()
    leaked = {"Authorization": f"Bearer {sb.config.client_secret}"}
    answers = [
        sb.http.get(MDE_ALERTS, headers=leaked),
        sb.http.get(MDCA_ALERTS, headers=leaked),
        sb.http.get(MDCA_ALERTS, headers={"Authorization": f"Token {secrets_[1]}x"}),
        sb.http.get(MDCA_ALERTS, headers=legacy(sb)),
        sb.http.get(
            arm_alerts_path(sb.config.subscription_ids[0]), headers=leaked, params=ARM_VERSION
        ),
        sb.http.get("/_sandbox/identity"),
        sb.http.get("/_sandbox/requests"),
    ]
    for answer in answers:
        text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in secrets_:
            assert secret not in text, (answer.request.url, secret)
