"""The sample alerts of every source: each API's shape, and loading them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from riposte.sandbox.samples import sample_alerts_by_source, sample_graph_alerts
from tests.sandbox.helpers import (
    GRAPH_TIME_RE,
    Sandbox,
    graph_ticks,
)

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
