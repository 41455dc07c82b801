"""Fault injection on every simulator: the Defender APIs' own error shapes, faults that strike
after the simulator handled the request, and faults that last a while then go by themselves."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from riposte.alerts.response import Priority, TicketDraft
from riposte.blocks import DefenderCredentials, ServiceNowCredentials
from riposte.blocks.errors import OutcomeUnknownError, ServiceRejectedError, ServiceUnavailableError
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.faults import FAULTABLE
from riposte.sandbox.samples import sample_endpoint_alerts
from riposte.sandbox.state import SERVICES
from tests.conftest import wait_until

MDE_ALERTS = "/mde/api/alerts"
MDCA_ALERTS = "/mdca/api/v1/alerts/"
ARM_ALERTS = "/arm/subscriptions/sub-1/providers/Microsoft.Security/alerts"
INCIDENTS = "/_sandbox/servicenow/incidents"


def fault(sandbox: httpx.Client, **spec: Any) -> dict[str, Any]:
    response = sandbox.post("/_sandbox/faults", json=spec)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def blocks(
    sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig
) -> dict[str, Any]:
    return dict(sandbox_blocks(sandbox_url, sandbox_config))


def _draft(key: str) -> TicketDraft:
    return TicketDraft(
        correlation_key=key,
        summary="[Defender] Suspicious PowerShell",
        description="Injected fault test.",
        priority=Priority.HIGH,
        source_label="Microsoft Defender (graph)",
    )


def test_every_simulated_service_can_be_faulted() -> None:
    assert FAULTABLE == SERVICES


def test_defender_for_endpoint_faults_answer_in_its_error_shape(sandbox: httpx.Client) -> None:
    fault(sandbox, service="mde", status=429, retry_after=2, times=1)
    fault(sandbox, service="mde", status=503, times=1)
    throttled = sandbox.get(MDE_ALERTS)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests" and "quota exceeded" in error["message"]
    assert error["target"] == throttled.headers["request-id"]
    down = sandbox.get(MDE_ALERTS)
    assert down.status_code == 503 and down.json()["error"]["code"] == "ServiceUnavailable"


def test_cloud_apps_faults_answer_in_its_error_shape_without_retry_after(
    sandbox: httpx.Client,
) -> None:
    fault(sandbox, service="mdca", status=429, times=1)
    fault(sandbox, service="mdca", method="POST", status=500, times=1)
    throttled = sandbox.get(MDCA_ALERTS)
    assert throttled.status_code == 429
    assert throttled.json() == {"detail": "Request was throttled."}
    assert "retry-after" not in throttled.headers  # as documented: clients back off alone
    failed = sandbox.post(MDCA_ALERTS, json={})
    assert failed.status_code == 500 and failed.json() == {"detail": "A server error occurred."}


def test_defender_for_cloud_faults_answer_in_the_arm_error_shape(sandbox: httpx.Client) -> None:
    fault(sandbox, service="arm", status=429, retry_after=5, times=1)
    fault(sandbox, service="arm", status=500, times=1)
    throttled = sandbox.get(ARM_ALERTS)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "5"
    assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert "after '5' seconds" in throttled.json()["error"]["message"]
    assert throttled.headers["x-ms-request-id"]
    failed = sandbox.get(ARM_ALERTS)
    assert failed.status_code == 500
    assert failed.json()["error"] == {"code": "InternalServerError", "message": "Injected fault."}


def test_defender_clients_retry_throttling_and_name_the_system_on_a_refusal(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    creds: DefenderCredentials = blocks["riposte-defender"]
    loaded = sandbox.post("/_sandbox/mde/alerts", json=sample_endpoint_alerts(datetime.now(UTC)))
    alert_id = loaded.json()["ids"][0]
    fault(sandbox, service="mde", method="GET", status=429, retry_after=1, times=1)
    assert creds.endpoint_client().get_alert(alert_id)["id"] == alert_id

    fault(sandbox, service="arm", status=400, times=None)
    with pytest.raises(ServiceRejectedError) as info:
        list(creds.source_client("defender_cloud").list_updated_since(None))
    assert "Microsoft Defender for Cloud" in str(info.value)
    assert "BadRequest: Injected fault." in str(info.value) and "(HTTP 400)" in str(info.value)
    routes = sandbox.get("/_sandbox/requests").json()["statuses"]["arm"]
    assert routes == {"400": 1}  # a refusal is not retried


def test_fault_after_handling_creates_the_ticket_but_answers_with_the_error(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    fault(sandbox, service="servicenow", method="POST", status=502, after_handling=True, times=1)
    client = blocks["riposte-servicenow"].get_client()
    with pytest.raises(ServiceUnavailableError, match="HTTP 502"):
        client.create(_draft("riposte-graph-late-502"))
    incidents = sandbox.get(INCIDENTS).json()
    assert [i["record"]["correlation_id"] for i in incidents] == ["riposte-graph-late-502"]
    # What a task retry does: look first, and find the ticket the lost answer was about.
    again = client.find_or_create(_draft("riposte-graph-late-502"))
    assert not again.created and again.key == incidents[0]["record"]["number"]
    assert len(sandbox.get(INCIDENTS).json()) == 1


def test_delayed_answer_after_handling_times_the_caller_out_with_the_ticket_made(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    snow: ServiceNowCredentials = blocks["riposte-servicenow"]
    impatient = snow.model_copy(update={"timeout_seconds": 0.5})
    fault(sandbox, service="servicenow", method="POST", delay=1.5, after_handling=True, times=1)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError, match="answer was lost"):
        impatient.get_client().create(_draft("riposte-graph-late-timeout"))
    assert time.monotonic() - started < 1.4  # the caller gave up before the answer came
    # The record exists although its creator never heard back.
    incidents = sandbox.get(INCIDENTS).json()
    assert [i["record"]["correlation_id"] for i in incidents] == ["riposte-graph-late-timeout"]


def test_delayed_answer_after_handling_is_the_real_answer(sandbox: httpx.Client) -> None:
    fault(sandbox, service="slack", delay=0.3, after_handling=True, times=1)
    hook = sandbox.get("/_sandbox/faults").json()[0]
    assert hook["after_handling"] is True and hook["remaining"] == 1
    started = time.monotonic()
    answer = sandbox.post("/slack/services/T0/B0/not-a-hook", json={"text": "hi"})
    assert time.monotonic() - started >= 0.3
    # Whatever the simulator said (here: no such webhook) is what the caller gets, late.
    assert answer.status_code == 404 and answer.text == "no_service"


def test_fault_for_seconds_ends_by_itself(sandbox: httpx.Client, blocks: dict[str, Any]) -> None:
    added = fault(sandbox, service="servicenow", status=503, for_seconds=1.0)
    assert added["for_seconds"] == 1.0 and 0 < added["expires_in"] <= 1.0
    started = time.monotonic()
    snow = blocks["riposte-servicenow"]
    headers = {"Accept": "application/json"}
    auth = (snow.username, snow.password.get_secret_value())
    incidents = "/servicenow/api/now/table/incident"
    assert sandbox.get(incidents, headers=headers, auth=auth).status_code == 503
    wait_until(
        lambda: sandbox.get(incidents, headers=headers, auth=auth).status_code == 200,
        timeout=10,
        interval=0.1,
        what="the outage to end",
    )
    assert time.monotonic() - started >= 0.9
    assert sandbox.get("/_sandbox/faults").json() == []


def test_fault_options_are_validated(sandbox: httpx.Client) -> None:
    assert sandbox.post("/_sandbox/faults", json={"service": "mde"}).status_code == 422
    assert (
        sandbox.post(
            "/_sandbox/faults", json={"service": "arm", "status": 500, "for_seconds": 0}
        ).status_code
        == 422
    )
    assert (
        sandbox.post("/_sandbox/faults", json={"service": "nope", "status": 500}).status_code == 422
    )
