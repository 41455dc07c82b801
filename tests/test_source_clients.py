"""The clients of every Defender alert API against the sandbox over real HTTP.

Paging across several pages for each API, every write-back, the MDCA close count check, ARM's
204s, one token per scope, and the MDCA legacy token. Long because it covers the four APIs.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from riposte.blocks import DefenderCredentials
from riposte.blocks.alert_sources import SOURCE_NAMES, AlertSourceClient, CloseVerdict
from riposte.blocks.errors import (
    ServiceAuthError,
    ServiceNotFoundError,
    ServiceRejectedError,
)
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.clock import graph_time
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.samples import (
    arm_alert_id,
    epoch_ms,
    sample_alerts_by_source,
    sample_cloud_apps_alerts,
    sample_defender_cloud_alerts,
    sample_endpoint_alerts,
)

# Source name -> the segment of its control endpoints, and the key of an alert's id.
CONTROL = {
    "graph": "graph",
    "defender_endpoint": "mde",
    "cloud_apps": "mdca",
    "defender_cloud": "arm",
}
ID_KEY = {"graph": "id", "defender_endpoint": "id", "cloud_apps": "_id", "defender_cloud": "id"}
NOW = datetime.now(UTC)


@pytest.fixture
def creds(
    sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig
) -> DefenderCredentials:
    block = sandbox_blocks(sandbox_url, sandbox_config)["riposte-defender"]
    assert isinstance(block, DefenderCredentials)
    return block


def fresh(block: DefenderCredentials, **changes: Any) -> DefenderCredentials:
    """A copy with new clients and token caches: the pool is per block configuration."""
    changes.setdefault("timeout_seconds", block.timeout_seconds + secrets.randbelow(10**6) / 10**7)
    return block.model_copy(update=changes)


def load(sandbox: httpx.Client, api: str, alerts: list[dict[str, Any]]) -> list[str]:
    response = sandbox.post(f"/_sandbox/{api}/alerts", json=alerts)
    response.raise_for_status()
    ids: list[str] = response.json()["ids"]
    return ids


def stored(sandbox: httpx.Client, api: str, key: str, alert_id: str) -> dict[str, Any]:
    alerts = sandbox.get(f"/_sandbox/{api}/alerts").json()
    return next(a for a in alerts if a[key] == alert_id)


def calls(sandbox: httpx.Client, service: str) -> dict[str, int]:
    routes: dict[str, int] = sandbox.get("/_sandbox/requests").json()["routes"].get(service, {})
    return routes


def identity(sandbox: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = sandbox.get("/_sandbox/identity").json()
    return body


# --- Defender for Endpoint ---------------------------------------------------------------------


def test_endpoint_listing_reads_every_page_then_yields_oldest_update_first_each_once(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    template = sample_endpoint_alerts(NOW)[0]
    alerts = []
    for i in range(7):
        alert = dict(template, id=f"da-mde-{i}")
        # Created in the reverse order of their updates: the API's own order is not ours.
        alert["alertCreationTime"] = graph_time(NOW - timedelta(minutes=i))
        alert["lastUpdateTime"] = graph_time(NOW - timedelta(minutes=30 - i))
        alerts.append(alert)
    old = dict(template, id="da-mde-old", lastUpdateTime=graph_time(NOW - timedelta(days=2)))
    load(sandbox, "mde", [*alerts, old])

    client = creds.endpoint_client()
    listed = list(client.list_alerts_since(NOW - timedelta(hours=1), page_size=3))

    assert [a["id"] for a in listed] == [f"da-mde-{i}" for i in range(7)]
    assert all(a["evidence"] for a in listed), "evidence is expanded"
    assert calls(sandbox, "mde") == {"GET /mde/api/alerts": 3}


def test_endpoint_write_back_is_pascal_case_and_comments_only_once(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert_id = load(sandbox, "mde", sample_endpoint_alerts(NOW))[0]
    source = creds.source_client("defender_endpoint")

    assert source.mark_in_progress(alert_id) is True
    assert stored(sandbox, "mde", "id", alert_id)["status"] == "InProgress"
    assert source.comment(alert_id, "Ticket INC0010001 opened") is True
    assert source.has_comment(alert_id, "INC0010001")
    assert not source.has_comment(alert_id, "INC0099999")

    source.close(alert_id, "false_positive", "Known admin script, see INC0010001")
    source.close(alert_id, "false_positive", "Known admin script, see INC0010001")

    alert = stored(sandbox, "mde", "id", alert_id)
    assert (alert["status"], alert["classification"], alert["determination"]) == (
        "Resolved",
        "FalsePositive",
        "NotMalicious",
    )
    assert alert["resolvedTime"]
    assert [c["comment"] for c in alert["comments"]] == [
        "Ticket INC0010001 opened",
        "Known admin script, see INC0010001",
    ]
    assert calls(sandbox, "mde")["PATCH /mde/api/alerts/{alert_id}"] == 3


def test_endpoint_mark_in_progress_leaves_a_resolved_alert_alone(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = dict(sample_endpoint_alerts(NOW)[1], status="Resolved")
    alert_id = load(sandbox, "mde", [alert])[0]
    assert creds.endpoint_client().mark_in_progress(alert_id) is True
    assert stored(sandbox, "mde", "id", alert_id)["status"] == "Resolved"


def test_endpoint_unknown_alert_is_not_found_without_a_url_in_the_error(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    with pytest.raises(ServiceNotFoundError) as info:
        creds.endpoint_client().get_alert("da000_missing")
    assert "Defender for Endpoint" in str(info.value)
    assert "http" not in str(info.value)


# --- Defender for Cloud Apps -------------------------------------------------------------------


def _cloud_apps_batch(count: int) -> list[dict[str, Any]]:
    template = sample_cloud_apps_alerts(NOW)[0]
    batch = []
    for i in range(count):
        raised = NOW - timedelta(minutes=50) + timedelta(seconds=i)
        batch.append(dict(template, _id=f"{i:024x}", idValue=i, timestamp=epoch_ms(raised)))
    return batch


def test_cloud_apps_listing_pages_by_skip_and_limit_until_has_next_is_false(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    old = dict(sample_cloud_apps_alerts(NOW)[1], timestamp=epoch_ms(NOW - timedelta(days=3)))
    load(sandbox, "mdca", [old, *_cloud_apps_batch(205)])

    listed = list(creds.cloud_apps_client().list_alerts_since(NOW - timedelta(hours=1)))

    assert [a["_id"] for a in listed] == [f"{i:024x}" for i in range(205)]
    assert calls(sandbox, "mdca") == {"POST /mdca/api/v1/alerts/": 3}  # 100 + 100 + 5


@pytest.mark.parametrize(
    ("verdict", "resolution"), [("benign", 4), ("false_positive", 3), ("true_positive", 5)]
)
def test_cloud_apps_close_sends_the_verdict_with_the_reason_as_comment(
    creds: DefenderCredentials, sandbox: httpx.Client, verdict: CloseVerdict, resolution: int
) -> None:
    alert_id = load(sandbox, "mdca", sample_cloud_apps_alerts(NOW))[0]
    source = creds.source_client("cloud_apps")

    assert source.mark_in_progress(alert_id) is False  # no such state: marked read instead
    assert stored(sandbox, "mdca", "_id", alert_id)["statusValue"] == 1
    assert source.comment(alert_id, "not possible on its own") is False
    source.close(alert_id, verdict, "Travelling user, confirmed by phone")

    alert = stored(sandbox, "mdca", "_id", alert_id)
    assert alert["resolutionStatusValue"] == resolution
    assert alert["comment"] == "Travelling user, confirmed by phone"
    assert source.has_comment(alert_id, "confirmed by phone")


def test_cloud_apps_close_that_closed_nothing_raises_and_names_the_missing_alert(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    load(sandbox, "mdca", sample_cloud_apps_alerts(NOW))
    missing = "ffffffffffffffffffffffff"
    with pytest.raises(ServiceNotFoundError) as info:
        creds.cloud_apps_client().close_false_positive([missing], comment="x")
    assert missing in str(info.value)
    assert "nothing was closed" in str(info.value)


def test_cloud_apps_close_of_several_returns_how_many_were_closed(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    ids = load(sandbox, "mdca", sample_cloud_apps_alerts(NOW))
    closed = creds.cloud_apps_client().close_true_positive([*ids, "f" * 24], comment="Incident 7")
    assert closed == len(ids)


def test_cloud_apps_legacy_token_is_used_instead_of_an_entra_token(
    creds: DefenderCredentials, sandbox: httpx.Client, sandbox_config: SandboxConfig
) -> None:
    load(sandbox, "mdca", sample_cloud_apps_alerts(NOW))
    legacy = fresh(creds, cloud_apps_api_token=SecretStr(sandbox_config.cloud_apps_legacy_token))
    assert len(list(legacy.cloud_apps_client().list_alerts_since(None))) == 3
    assert identity(sandbox)["tokens_issued"] == 0


def test_cloud_apps_wrong_legacy_token_is_an_auth_error_that_hides_the_token(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    canary = "not-the-token-" + secrets.token_hex(6)
    wrong = fresh(creds, cloud_apps_api_token=SecretStr(canary))
    with pytest.raises(ServiceAuthError) as info:
        list(wrong.cloud_apps_client().list_alerts_since(None))
    assert canary not in str(info.value)


def test_cloud_apps_throttling_without_retry_after_is_waited_out(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    load(sandbox, "mdca", sample_cloud_apps_alerts(NOW))
    sandbox.post(
        "/_sandbox/mdca/throttle", json={"enabled": True, "requests": 2, "window_seconds": 1.0}
    ).raise_for_status()
    client = creds.cloud_apps_client()
    started = time.monotonic()
    listed = list(client.list_alerts_since(None, page_size=1))
    assert len(listed) == 3
    assert time.monotonic() - started >= 2.0  # no Retry-After: at least 2 s of back-off
    assert sandbox.get("/_sandbox/requests").json()["statuses"]["mdca"]["429"] >= 1


def test_cloud_apps_without_a_portal_url_fails_with_a_clear_error(
    creds: DefenderCredentials,
) -> None:
    with pytest.raises(ServiceAuthError, match="cloud_apps_base_url"):
        fresh(creds, cloud_apps_base_url=None).cloud_apps_client()


# --- Defender for Cloud (ARM) ------------------------------------------------------------------


def _arm_alert(name: str, subscription: str, generated: datetime) -> dict[str, Any]:
    alert = sample_defender_cloud_alerts(NOW)[0]
    alert["id"] = arm_alert_id(name, subscription)
    alert["name"] = name
    alert["properties"] = dict(
        alert["properties"],
        systemAlertId=name,
        timeGeneratedUtc=graph_time(generated),
        processingEndTimeUtc=graph_time(generated + timedelta(seconds=5)),
    )
    return alert


def test_defender_cloud_listing_follows_next_link_across_pages_and_subscriptions(
    sandbox_config: SandboxConfig,
) -> None:
    from riposte.sandbox.app import create_app
    from tests.servers import serve_in_thread

    first, second = sandbox_config.subscription_ids[0], "0d4c7b2e-1111-4a2b-9c3d-5e6f7a8b9c0d"
    two = sandbox_config.model_copy(update={"subscription_ids": [first, second]})
    start = NOW - timedelta(minutes=40)
    alerts = [
        _arm_alert(f"alert-{i:02d}", first if i % 3 else second, start + timedelta(minutes=i))
        for i in range(8)
    ]
    old = _arm_alert("alert-old", first, NOW - timedelta(days=5))
    with (
        serve_in_thread(create_app(two)) as url,
        httpx.Client(base_url=url, timeout=10) as sandbox,
    ):
        load(sandbox, "arm", [*alerts, old])
        sandbox.post("/_sandbox/arm/settings", json={"page_size": 2}).raise_for_status()
        creds = sandbox_blocks(url, two)["riposte-defender"]
        assert isinstance(creds, DefenderCredentials)
        client = creds.cloud_client()
        listed = list(client.list_alerts_since(NOW - timedelta(hours=1)))
        counted = calls(sandbox, "arm")

    assert [a["name"] for a in listed] == [f"alert-{i:02d}" for i in range(8)]
    route = "GET /arm/subscriptions/{subscription}/providers/Microsoft.Security/alerts"
    # first: 5 in range + 1 old = 6 -> 3 pages; second: 3 -> 2 pages.
    assert counted == {route: 5}


def test_sandbox_refuses_a_defender_cloud_alert_of_a_subscription_its_tenant_does_not_hold(
    sandbox: httpx.Client, sandbox_config: SandboxConfig
) -> None:
    held = sandbox_config.subscription_ids[0]
    stranger = "0d4c7b2e-2222-4a2b-9c3d-5e6f7a8b9c0d"
    batch = [_arm_alert("alert-held", held, NOW), _arm_alert("alert-stray", stranger, NOW)]
    refused = sandbox.post("/_sandbox/arm/alerts", json=batch)
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert stranger in detail and held in detail  # what it was given, and what it knows
    assert sandbox.get("/_sandbox/arm/alerts").json() == []  # nothing half-loaded


def test_defender_cloud_close_and_progress_answer_204_and_set_the_status(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    ids = load(sandbox, "arm", sample_defender_cloud_alerts(NOW))
    source = creds.source_client("defender_cloud")

    assert source.mark_in_progress(ids[0]) is True
    assert stored(sandbox, "arm", "id", ids[0])["properties"]["status"] == "InProgress"
    source.close(ids[0], "true_positive", "Blocked the IP in APIM")
    source.close(ids[1], "false_positive", "Our own load test")
    source.close(ids[2], "benign", "Pen test window")

    statuses = [stored(sandbox, "arm", "id", i)["properties"]["status"] for i in ids[:3]]
    assert statuses == ["Resolved", "Dismissed", "Dismissed"]
    assert source.comment(ids[0], "no comments on ARM") is False
    assert source.has_comment(ids[0], "anything") is False
    assert sandbox.get("/_sandbox/requests").json()["statuses"]["arm"]["204"] == 4


def test_defender_cloud_alert_is_found_by_full_arm_id_or_by_name(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    ids = load(sandbox, "arm", sample_defender_cloud_alerts(NOW))
    client = creds.cloud_client()
    by_id = client.get_alert(ids[1])
    by_name = client.get_alert(by_id["name"])
    assert by_id == by_name
    assert by_id["properties"]["alertType"] == "API_ParameterEnumeration"


def test_defender_cloud_unknown_alert_is_not_found(
    creds: DefenderCredentials, sandbox: httpx.Client, sandbox_config: SandboxConfig
) -> None:
    client = creds.cloud_client()
    with pytest.raises(ServiceNotFoundError):
        client.get_alert(arm_alert_id("missing", sandbox_config.subscription_ids[0]))
    with pytest.raises(ServiceNotFoundError):
        client.get_alert("no-such-alert-name")
    with pytest.raises(ValueError):
        client.get_alert("/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/vm/z")


def test_defender_cloud_without_subscriptions_refuses_to_list(
    creds: DefenderCredentials,
) -> None:
    with pytest.raises(ServiceAuthError, match="subscription_ids"):
        list(fresh(creds, subscription_ids=[]).cloud_client().list_alerts_since(None))


# --- Graph, through the common interface -------------------------------------------------------


def test_graph_source_marks_in_progress_comments_and_closes_once(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert_id = load(sandbox, "graph", sample_alerts_by_source(NOW)["graph"])[0]
    source = creds.source_client("graph")

    assert source.mark_in_progress(alert_id) is True
    assert source.comment(alert_id, "Ticket SEC-1") is True
    assert source.has_comment(alert_id, "SEC-1")
    source.close(alert_id, "benign", "Admin maintenance")
    source.close(alert_id, "benign", "Admin maintenance")

    alert = stored(sandbox, "graph", "id", alert_id)
    assert (alert["status"], alert["classification"], alert["determination"]) == (
        "resolved",
        "informationalExpectedActivity",
        "other",
    )
    assert [c["comment"] for c in alert["comments"]] == ["Ticket SEC-1", "Admin maintenance"]


# --- every source ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_every_source_lists_gets_and_closes_its_sample_alerts(
    creds: DefenderCredentials, sandbox: httpx.Client, source: str
) -> None:
    loaded = sandbox.post("/_sandbox/alerts/samples").json()
    client = creds.source_client(source)
    assert isinstance(client, AlertSourceClient)
    assert client.source == source

    listed = list(client.list_updated_since(NOW - timedelta(hours=1)))
    key = ID_KEY[source]
    assert sorted(a[key] for a in listed) == sorted(loaded[source])
    first = listed[0][key]
    assert client.get(first)[key] == first

    client.close(first, "true_positive", "Contained by playbook")
    after = stored(sandbox, CONTROL[source], key, first)
    closed = {
        "graph": lambda a: a["status"] == "resolved",
        "defender_endpoint": lambda a: a["status"] == "Resolved",
        "cloud_apps": lambda a: a["resolutionStatusValue"] == 5,
        "defender_cloud": lambda a: a["properties"]["status"] == "Resolved",
    }[source]
    assert closed(after)


def test_source_names_are_fixed_and_an_unknown_one_is_refused(
    creds: DefenderCredentials,
) -> None:
    assert SOURCE_NAMES == ("graph", "defender_endpoint", "cloud_apps", "defender_cloud")
    with pytest.raises(ValueError, match="defender_cloud"):
        creds.source_client("sentinel")


def test_each_api_gets_a_token_for_its_own_scope_and_reuses_it(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/alerts/samples").raise_for_status()
    block = fresh(creds)
    for _ in range(2):
        for source in SOURCE_NAMES:
            next(iter(block.source_client(source).list_updated_since(None)))
    assert Counter(identity(sandbox)["audiences"]) == Counter(
        {
            "https://graph.microsoft.com": 1,
            "https://api.securitycenter.microsoft.com": 1,
            "05a65629-4c1b-48c1-a78b-804c4abdd4af": 1,
            "https://management.azure.com": 1,
        }
    )


def test_graph_client_of_the_block_is_unchanged_and_pooled(creds: DefenderCredentials) -> None:
    assert creds.get_client() is creds.get_client()
    assert creds.endpoint_client() is creds.source_client("defender_endpoint")
    assert creds.cloud_client() is creds.cloud_client()


def test_errors_of_the_source_clients_name_the_system_and_never_a_secret(
    creds: DefenderCredentials, sandbox: httpx.Client, sandbox_config: SandboxConfig
) -> None:
    canary = "wrong-secret-" + secrets.token_hex(6)
    wrong = fresh(creds, client_secret=SecretStr(canary))
    for source in ("defender_endpoint", "cloud_apps", "defender_cloud"):
        with pytest.raises(ServiceAuthError) as info:
            list(wrong.source_client(source).list_updated_since(None))
        assert canary not in str(info.value)
        assert sandbox_config.client_secret not in str(info.value)
    with pytest.raises(ServiceRejectedError):
        creds.cloud_apps_client().close_benign(["a" * 24], reason_id=99)


@pytest.mark.parametrize("source", ["graph", "defender_endpoint", "cloud_apps", "defender_cloud"])
def test_triage_sets_owner_and_verdict_in_each_api_s_own_spelling_or_says_it_cannot(
    creds: DefenderCredentials, sandbox: httpx.Client, source: str
) -> None:
    """Graph takes camelCase as given; Defender for Endpoint gets PascalCase (compromisedAccount
    is its CompromisedUser); Cloud Apps and Defender for Cloud have no owner or verdict outside
    closing, and say so. A second call with the same values writes nothing."""
    ids = sandbox.post("/_sandbox/alerts/samples").json()[source]
    client = creds.source_client(source)
    alert_id = ids[0]
    wanted = {
        "assignedTo": "soc@example.com",
        "classification": "truePositive",
        "determination": "compromisedAccount",
    }
    done = client.triage(alert_id, wanted)
    if source in ("cloud_apps", "defender_cloud"):
        assert done.written == () and len(done.unsupported) == 3
        return
    assert done.written == ("assignedTo", "classification", "determination")
    stored = client.get(alert_id)
    expected = (
        ("soc@example.com", "TruePositive", "CompromisedUser")
        if source == "defender_endpoint"
        else ("soc@example.com", "truePositive", "compromisedAccount")
    )
    assert (stored["assignedTo"], stored["classification"], stored["determination"]) == expected
    assert client.triage(alert_id, wanted).written == ()


def test_defender_for_endpoint_refuses_retired_determinations_as_the_service_does(
    creds: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert_id = sandbox.post("/_sandbox/mde/alerts/samples").json()["ids"][0]
    client = creds.endpoint_client()
    for retired in ("Apt", "SecurityPersonnel"):
        with pytest.raises(ServiceRejectedError, match="no longer supported"):
            client.update_alert(alert_id, determination=retired)
    # The client refuses Graph's `apt` before sending: this API has no equivalent.
    with pytest.raises(ServiceRejectedError, match="no determination 'apt'"):
        client.triage(alert_id, {"determination": "apt"})
