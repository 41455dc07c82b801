"""The Defender for Cloud Apps simulator: alerts list, filter, fetch, close, throttle."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.helpers import (
    MDCA_ALERTS,
    MDCA_SCOPE,
    Sandbox,
    bearer,
    legacy,
)

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
