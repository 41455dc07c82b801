"""The clients' retry waits reach the Prefect run's log, and a refusal ends the task at once
with a message that names the system and the reason."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Log, TaskRun
from prefect.logging.handlers import APILogWorker

from riposte.blocks import ServiceNowCredentials, SlackIncomingWebhook, _http
from riposte.blocks._http import RetryPolicy
from riposte.blocks.errors import ServiceRejectedError
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.config import SandboxConfig
from riposte.tasks._common import external_call
from tests.conftest import wait_until


@pytest.fixture
def blocks(
    prefect_server: str, sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig
) -> dict[str, Any]:
    return dict(sandbox_blocks(sandbox_url, sandbox_config))


@pytest.fixture(autouse=True)
def send_run_logs() -> Iterator[None]:
    """Flush the runs' logs while the session's Prefect server is still up."""
    yield
    APILogWorker.drain_all(timeout=5)


def fault(sandbox: httpx.Client, **spec: Any) -> None:
    sandbox.post("/_sandbox/faults", json=spec).raise_for_status()


def run_logs(flow_run_id: UUID) -> list[Log]:
    with get_client(sync_client=True) as client:
        return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def task_runs(flow_run_id: UUID) -> list[TaskRun]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def test_throttling_and_server_error_waits_appear_in_the_run_log(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    slack: SlackIncomingWebhook = blocks["riposte-slack"]
    snow: ServiceNowCredentials = blocks["riposte-servicenow"]
    fault(sandbox, service="slack", method="POST", status=429, retry_after=1, times=1)
    fault(sandbox, service="servicenow", method="GET", status=500, times=1)

    @task
    def look_up_then_notify() -> None:
        snow.get_client().find("riposte-graph-retry-log")
        slack.get_client().post({"text": "hello"})

    @flow
    def respond() -> None:
        look_up_then_notify()

    state = respond(return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    def waits() -> list[Log]:
        return [log for log in run_logs(flow_run_id) if "waiting" in log.message]

    logged = wait_until(lambda: len(waits()) >= 2 and waits(), timeout=30, what="retry logs")
    messages = sorted(log.message for log in logged)
    assert messages[0].startswith("ServiceNow answered HTTP 500; waiting ")
    assert messages[0].endswith("before attempt 2 of 4 (GET request)")
    assert messages[1] == (
        "Slack throttled the request (HTTP 429, Retry-After 1); waiting 1.0s before attempt 2"
        " of 4 (POST request)"
    )
    assert all(log.level == 30 and log.task_run_id is not None for log in logged)
    assert "/services/" not in " ".join(messages)  # never the webhook URL
    assert len(sandbox.get("/_sandbox/slack/messages").json()) == 1


def test_a_long_retry_after_is_not_waited_in_the_client() -> None:
    policy = RetryPolicy()
    asked = httpx.Response(429, headers={"Retry-After": "120"})
    assert policy.throttle_wait(asked, 0) == (120.0, "Retry-After 120")
    assert policy.retry_after(asked, 0) == 30.0  # what a client would wait, at most
    silent = httpx.Response(429)
    delay, why = policy.throttle_wait(silent, 0)
    assert delay >= 2.0 and why == "no Retry-After, backing off"


def test_a_retry_after_beyond_the_client_s_cap_defers_the_step_visibly_and_sends_once_more(
    blocks: dict[str, Any], sandbox: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap lowered to 1 s (30 s in production) so that a 3 s window stands for an hour's.
    monkeypatch.setattr(_http, "RetryPolicy", functools.partial(RetryPolicy, retry_after_cap=1.0))
    snow: ServiceNowCredentials = blocks["riposte-servicenow"].model_copy(
        update={"timeout_seconds": 14.25}  # a client of its own, built with the lower cap
    )
    fault(sandbox, service="servicenow", method="GET", status=429, retry_after=3, times=1)

    @external_call()
    def look_up() -> None:
        snow.get_client().find("riposte-graph-deferred")

    @flow
    def respond() -> None:
        look_up()

    started = time.monotonic()
    state = respond(return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_completed(), state.message
    assert elapsed >= 3.0
    # Refused once, answered once: no attempts thrown at a closed window, no task retry.
    statuses = sandbox.get("/_sandbox/requests").json()["statuses"]["servicenow"]
    assert statuses == {"429": 1, "200": 1}
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    logged = wait_until(
        lambda: [log for log in run_logs(flow_run_id) if "rate limit" in log.message],
        timeout=30,
        what="the deferral in the run's log",
    )
    assert [log.message for log in logged] == [
        "ServiceNow: rate limit reached; the step waits 3 s (Retry-After), then tries again"
    ]
    runs = task_runs(flow_run_id)
    assert len(runs) == 1 and runs[0].run_count == 1


def test_a_refusal_is_not_retried_and_fails_the_task_naming_system_and_reason(
    blocks: dict[str, Any], sandbox: httpx.Client
) -> None:
    slack: SlackIncomingWebhook = blocks["riposte-slack"]
    fault(sandbox, service="slack", status=400, times=None)

    @external_call()  # the decorator of Riposte's tasks: retried unless the failure is permanent
    def notify(text: str) -> None:
        slack.get_client().post({"text": text})

    @flow
    def respond() -> None:
        notify("hello")

    state = respond(return_state=True)
    assert state.is_failed()
    with pytest.raises(ServiceRejectedError) as info:
        state.result()
    assert str(info.value) == "Slack: message to #soc-alerts failed: invalid_payload (HTTP 400)"

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    runs = wait_until(
        lambda: [r for r in task_runs(flow_run_id) if r.state and r.state.is_final()],
        timeout=30,
        what="the task run's final state",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.state is not None and run.state.is_failed() and run.run_count == 1
    assert "Slack" in (run.state.message or "") and "invalid_payload" in (run.state.message or "")
    assert sandbox.get("/_sandbox/requests").json()["services"]["slack"] == 1
