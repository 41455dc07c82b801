"""Fault injection in the sandbox: errors, delays, how they are listed and cleared."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sandbox.helpers import (
    ALERTS,
    INCIDENTS,
    JIRA,
    Sandbox,
    alert,
    teams_card,
)

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
