"""The block clients against the sandbox over real HTTP: auth, find-or-create, throttling."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from riposte.alerts.response import Priority, TicketDraft
from riposte.blocks import (
    DefenderCredentials,
    JiraCredentials,
    ServiceNowCredentials,
    SlackIncomingWebhook,
    TeamsWorkflowWebhook,
)
from riposte.blocks.errors import (
    ExternalServiceError,
    ServiceAuthError,
    ServiceRejectedError,
    ServiceUnavailableError,
)
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.samples import sample_graph_alerts


@pytest.fixture
def blocks(sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig) -> dict:  # type: ignore[type-arg]
    return sandbox_blocks(sandbox_url, sandbox_config)


def _draft(key: str = "riposte-graph-abc") -> TicketDraft:
    return TicketDraft(
        correlation_key=key,
        summary="[Defender] Suspicious PowerShell",
        description="Line one.\n\n- a: b\n- see https://security.microsoft.com/alerts/1",
        priority=Priority.HIGH,
        source_label="Microsoft Defender (graph)",
    )


def _fresh(block):  # type: ignore[no-untyped-def]
    """A copy of a block with a fresh client (the pool is per configuration)."""
    return block.model_copy(update={"timeout_seconds": block.timeout_seconds + time.time() % 1})


def test_servicenow_find_or_create_twice_makes_one_incident(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    client = blocks["riposte-servicenow"].get_client()
    first = client.find_or_create(_draft())
    second = client.find_or_create(_draft())
    assert first.created and not second.created
    assert first.key == second.key and first.key.startswith("INC")
    incidents = sandbox.get("/_sandbox/servicenow/incidents").json()
    assert len(incidents) == 1


def test_servicenow_lookup_ignores_records_with_another_correlation_id(blocks) -> None:  # type: ignore[no-untyped-def]
    client = blocks["riposte-servicenow"].get_client()
    client.find_or_create(_draft("riposte-graph-one"))
    assert client.find("riposte-graph-two") is None


def test_jira_find_or_create_twice_makes_one_issue_with_adf_description(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    # The client's own find-or-create trusts a search that keeps up with writes; the step that
    # opens tickets keeps records for one that lags (test_hardening).
    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0}).raise_for_status()
    client = blocks["riposte-jira"].get_client()
    first = client.find_or_create(_draft())
    second = client.find_or_create(_draft())
    assert first.created and not second.created and first.key == second.key
    issues = sandbox.get("/_sandbox/jira/issues").json()
    assert len(issues) == 1
    client.add_note(first, "a note with https://example.test/x")


def test_wrong_password_is_an_auth_error_that_does_not_show_the_secret(blocks) -> None:  # type: ignore[no-untyped-def]
    bad = blocks["riposte-servicenow"].model_copy(
        update={"password": SecretStr("not-the-password-canary")}
    )
    with pytest.raises(ServiceAuthError) as info:
        bad.get_client().find_or_create(_draft())
    assert "not-the-password-canary" not in str(info.value)
    assert "ServiceNow" in str(info.value)


def test_defender_token_is_fetched_once_and_reused(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    sandbox.post(
        "/_sandbox/graph/alerts", json=sample_graph_alerts(datetime.now(UTC))
    ).raise_for_status()
    client = _fresh(blocks["riposte-defender"]).get_client()
    alerts = list(client.list_alerts_since(datetime.now(UTC) - timedelta(hours=1)))
    assert len(alerts) >= 2
    client.get_alert(alerts[0]["id"])
    client.get_alert(alerts[1]["id"])
    assert sandbox.get("/_sandbox/identity").json()["tokens_issued"] == 1


def test_graph_listing_pages_by_update_time_and_yields_each_alert_once(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    batch = []
    for i in range(7):
        alert = sample_graph_alerts(now)[i % 4]
        alert["id"] = f"page-{i}"
        batch.append(alert)
    sandbox.post("/_sandbox/graph/alerts", json=batch).raise_for_status()
    client = blocks["riposte-defender"].get_client()
    ids = [a["id"] for a in client.list_alerts_since(now - timedelta(days=1), page_size=3)]
    assert sorted(ids) == sorted(f"page-{i}" for i in range(7))


def _spread(now: datetime, count: int, *, same_time: bool = False) -> list[dict[str, Any]]:
    """``count`` Graph alerts updated over the last hour (or all in one instant)."""
    out = []
    for i in range(count):
        alert = sample_graph_alerts(now)[i % 4]
        alert["id"] = f"spread-{os.urandom(3).hex()}-{i}"
        moment = now - timedelta(minutes=0 if same_time else 59 - 2 * i)
        alert["lastUpdateDateTime"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(alert)
    return out


@pytest.mark.parametrize("next_link", [True, False], ids=["next-link", "no-next-link"])
def test_graph_listing_reads_every_alert_once_oldest_first_without_orderby(
    blocks,
    sandbox,
    next_link: bool,  # type: ignore[no-untyped-def]
) -> None:
    """The service answers in its own order (`$orderby` is not documented for alerts_v2): the
    client follows nextLink when there is one, splits the window by time when a tenant sends
    none, reads a crowded millisecond by $skip, and yields oldest update first."""
    sandbox.post("/_sandbox/graph/settings", json={"next_link": next_link}).raise_for_status()
    now = datetime.now(UTC)
    spread, crowd = _spread(now - timedelta(hours=1), 23), _spread(now, 12, same_time=True)
    sandbox.post("/_sandbox/graph/alerts", json=spread + crowd).raise_for_status()
    client = blocks["riposte-defender"].get_client()
    sandbox.delete("/_sandbox/requests").raise_for_status()
    listed = list(client.list_alerts_since(now - timedelta(hours=3), page_size=5))
    ids = [a["id"] for a in listed]
    assert sorted(ids) == sorted(a["id"] for a in spread + crowd) and len(ids) == len(set(ids))
    times = [a["lastUpdateDateTime"] for a in listed]
    assert times == sorted(times)
    log = sandbox.get("/_sandbox/requests").json()
    routes = log["routes"]["graph"]
    lists = sum(n for route, n in routes.items() if route.endswith("/security/alerts_v2"))
    lists -= sum(n for code, n in log["statuses"]["graph"].items() if code != "200")  # retried
    # With links: one window, 35 alerts in 7 pages. Without: windows split by time.
    assert (lists == 7) == next_link, log


def test_a_next_link_off_the_graph_host_is_not_followed(blocks) -> None:  # type: ignore[no-untyped-def]
    client = blocks["riposte-defender"].get_client()
    with pytest.raises(ServiceRejectedError, match="leaves the Graph host"):
        client._same_host("https://evil.example/v1.0/security/alerts_v2?$skiptoken=1")


def test_defender_for_apis_sources_are_visible_thanks_to_prefer_header(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    sandbox.post(
        "/_sandbox/graph/alerts", json=sample_graph_alerts(datetime.now(UTC))
    ).raise_for_status()
    client = blocks["riposte-defender"].get_client()
    sources = {a.get("detectionSource") for a in client.list_alerts_since(None)}
    assert "microsoftDefenderForApiManagement" in sources
    assert "unknownFutureValue" not in sources


def test_throttled_call_waits_retry_after_then_succeeds(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "servicenow", "status": 429, "retry_after": 1, "times": 2},
    ).raise_for_status()
    started = time.monotonic()
    ticket = blocks["riposte-servicenow"].get_client().find_or_create(_draft())
    elapsed = time.monotonic() - started
    assert ticket.created
    assert elapsed >= 2.0  # two waits of Retry-After: 1
    assert len(sandbox.get("/_sandbox/servicenow/incidents").json()) == 1


def test_server_errors_are_retried_for_reads_but_a_failed_create_is_not_blindly_repeated(
    blocks, sandbox
) -> None:  # type: ignore[no-untyped-def]
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "servicenow", "method": "POST", "status": 500, "times": 1},
    ).raise_for_status()
    client = blocks["riposte-servicenow"].get_client()
    with pytest.raises(ServiceUnavailableError):
        client.find_or_create(_draft())
    # The next attempt (a task retry) looks first, then creates exactly one.
    assert client.find_or_create(_draft()).created
    assert len(sandbox.get("/_sandbox/servicenow/incidents").json()) == 1


def test_client_errors_other_than_throttling_are_not_retried(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    sandbox.post(
        "/_sandbox/faults", json={"service": "slack", "status": 400, "times": None}
    ).raise_for_status()
    with pytest.raises(ServiceRejectedError):
        blocks["riposte-slack"].get_client().post({"text": "hello"})
    counts = sandbox.get("/_sandbox/requests").json()
    assert counts["services"]["slack"] == 1


def test_slack_and_teams_messages_are_delivered(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    slack: SlackIncomingWebhook = blocks["riposte-slack"]
    teams: TeamsWorkflowWebhook = blocks["riposte-teams"]
    slack.get_client().post({"text": "hello", "blocks": []})
    teams.get_client().post(
        {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {"type": "AdaptiveCard", "version": "1.4", "body": []},
                }
            ],
        }
    )
    assert len(sandbox.get("/_sandbox/slack/messages").json()) == 1
    assert len(sandbox.get("/_sandbox/teams/messages").json()) == 1


def test_webhook_errors_never_include_the_webhook_url(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    slack: SlackIncomingWebhook = blocks["riposte-slack"]
    wrong = slack.model_copy(update={"url": SecretStr(slack.url.get_secret_value() + "x")})
    with pytest.raises(ExternalServiceError) as info:
        wrong.get_client().post({"text": "hello"})
    secret_part = slack.url.get_secret_value().rsplit("/", 1)[-1]
    assert secret_part not in str(info.value)


def test_unreachable_service_fails_with_a_clear_error_after_retries() -> None:
    from tests.servers import free_port

    creds = ServiceNowCredentials(
        instance_url=f"http://127.0.0.1:{free_port()}",
        username="u",
        password=SecretStr("p"),
        timeout_seconds=1,
    )
    client = creds.get_client()
    with pytest.raises(ServiceUnavailableError, match="cannot reach"):
        client.find("x")


def test_defender_credentials_keep_the_secret_out_of_repr() -> None:
    creds = DefenderCredentials(
        tenant_id="t", client_id="c", client_secret=SecretStr("s3cr3t-canary")
    )
    assert "s3cr3t-canary" not in repr(creds) and "s3cr3t-canary" not in str(creds.model_dump())
    assert JiraCredentials.get_block_type_slug() == "jira-credentials"


def test_expired_token_is_replaced_without_failing_the_call(blocks, sandbox) -> None:  # type: ignore[no-untyped-def]
    sandbox.post(
        "/_sandbox/graph/alerts", json=sample_graph_alerts(datetime.now(UTC))
    ).raise_for_status()
    client = _fresh(blocks["riposte-defender"]).get_client()
    first = next(iter(client.list_alerts_since(None)))
    sandbox.post("/_sandbox/identity/expire-tokens").raise_for_status()
    assert client.get_alert(first["id"])["id"] == first["id"]
    assert sandbox.get("/_sandbox/identity").json()["tokens_issued"] == 2
