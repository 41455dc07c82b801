"""The Defender for Cloud (ARM) simulator: alerts list, get and state changes."""

from __future__ import annotations

from typing import Any

from tests.sandbox.helpers import (
    ARM_SCOPE,
    ARM_VERSION,
    GRAPH_SCOPE,
    Sandbox,
    arm_alerts_path,
    bearer,
)

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
