"""Reconcile answers again the alerts whose responses failed, and gives up after its retries.

On the session's Prefect server, responder and sandbox: a response is made to fail (ServiceNow
refuses with 400, which nothing retries), then reconcile runs as its schedule would.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from riposte.alerts.response import ref_for
from riposte.alerts.run_plan import plan_runs
from riposte.alerts.sources import parse_alert
from riposte.settings import RECONCILE_DEPLOYMENT, RESPOND_DEPLOYMENT
from riposte.tasks.runs import start_responses
from tests.test_playbook_e2e import _alerts, _assert_answered_once, _items, _state, _wait_final

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

REFUSE_TICKETS = {"service": "servicenow", "status": 400}


def test_plan_runs_gives_a_new_attempt_keys_of_its_own() -> None:
    refs = [ref_for(parse_alert(a, "graph")) for a in _samples(25)]
    first = plan_runs(refs[:1])
    again = plan_runs(refs[:1], attempt=2)
    assert first[0].idempotency_key == f"respond:{refs[0].key}"
    assert again[0].idempotency_key == f"respond:{refs[0].key}:again-2"
    assert first[0].name == again[0].name  # still found in the UI by the alert's id
    # ... and told apart from the first run by its tags.
    assert {"rerun", "attempt:3"} <= set(again[0].tags)
    assert not {t for t in first[0].tags if t == "rerun" or t.startswith("attempt:")}
    (batch,) = plan_runs(refs)
    (batch_again,) = plan_runs(refs, attempt=1)
    assert batch_again.idempotency_key == f"{batch.idempotency_key}:again-1"
    assert {"rerun", "attempt:2"} <= set(batch_again.tags) and "rerun" not in batch.tags


def _samples(n: int) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from riposte.sandbox.samples import sample_graph_alerts

    base = sample_graph_alerts(datetime.now(UTC))
    out = []
    for i in range(n):
        alert = dict(base[i % len(base)])
        alert["id"] = f"plan-{i}"
        out.append(alert)
    return out


def _runs_named(name: str) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )


def _reconcile_deployment() -> dict[str, Any]:
    run = run_deployment(
        RECONCILE_DEPLOYMENT, parameters={"sources": ["graph"]}, timeout=0, as_subflow=False
    )
    done = _wait_final(run.id, timeout=180)  # type: ignore[union-attr]
    assert done.state is not None and done.state.is_completed(), done.state
    assert done.name == "reconcile" and "housekeeping" in done.tags
    (summary,) = done.state.result()
    result: dict[str, Any] = summary.model_dump()
    return result


def _fail_response(sandbox: httpx.Client, alert_id: str) -> FlowRun:
    sandbox.post("/_sandbox/faults", json=REFUSE_TICKETS).raise_for_status()
    run = run_deployment(
        RESPOND_DEPLOYMENT, parameters={"alert_id": alert_id}, timeout=0, as_subflow=False
    )
    failed = _wait_final(run.id)  # type: ignore[union-attr]
    assert failed.state is not None and failed.state.is_failed(), failed.state
    sandbox.delete("/_sandbox/faults").raise_for_status()
    return failed


def test_a_failed_response_is_answered_again_once_and_then_left_alone(
    sandbox: httpx.Client,
) -> None:
    (alert,) = _alerts(sandbox, 1, "reconcile-failed")
    failed = _fail_response(sandbox, alert["id"])
    assert _items(_state(sandbox)["incidents"], "incidents") == []

    summary = _reconcile_deployment()
    assert summary["failed"] == [alert["id"]]
    assert summary["unanswered"] == [] and summary["gave_up"] == []
    assert summary["started"] == 1
    runs = [r for r in _runs_named(f"graph-{alert['id']}") if r.id != failed.id]
    assert len(runs) == 1, runs
    done = _wait_final(runs[0].id)
    assert done.state is not None and done.state.is_completed(), done.state
    # Same name as the failed first run (found by the alert's id), told apart by its tags.
    assert {"rerun", "attempt:2", "response"} <= set(done.tags), done.tags
    assert "rerun" not in failed.tags and "response" in failed.tags
    _assert_answered_once(sandbox, [alert["id"]])

    # Answered now: the next reconcile starts nothing for it.
    again = _reconcile_deployment()
    assert again["failed"] == [] and again["unanswered"] == [] and again["started"] == 0
    assert len(_runs_named(f"graph-{alert['id']}")) == 2


def test_reconcile_gives_up_after_its_retries_and_says_so(
    sandbox: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riposte.flows.reconcile import reconcile_alerts

    (alert,) = _alerts(sandbox, 1, "reconcile-gave-up")
    _fail_response(sandbox, alert["id"])
    # In this process (not the responder's), with no retries: one failure is one too many.
    monkeypatch.setenv("RIPOSTE_RECONCILE_RETRIES", "0")
    (summary,) = reconcile_alerts(sources=["graph"])
    assert summary.gave_up == [alert["id"]]
    assert summary.failed == [] and summary.unanswered == [] and summary.started == 0
    assert len(_runs_named(f"graph-{alert['id']}")) == 1
    assert _items(_state(sandbox)["incidents"], "incidents") == []


def test_a_failed_batch_has_only_its_failed_alerts_answered_again(sandbox: httpx.Client) -> None:
    alerts = [a for k in range(6) for a in _alerts(sandbox, 4, f"reconcile-batch{k}")]
    refs = [ref_for(parse_alert(a, "graph")) for a in alerts]
    assert len(plan_runs(refs)) == 1  # more than the single-run limit: one batch
    # ServiceNow refuses a few requests: the alerts that met them fail, the others are answered.
    sandbox.post("/_sandbox/faults", json={**REFUSE_TICKETS, "times": 3}).raise_for_status()
    (batch_id,) = start_responses.fn(refs)
    batch = _wait_final(batch_id, timeout=300)
    assert batch.state is not None and batch.state.is_failed(), batch.state
    sandbox.delete("/_sandbox/faults").raise_for_status()
    ticketed = {
        i["record"]["correlation_id"] for i in _items(_state(sandbox)["incidents"], "incidents")
    }
    without = sorted(a["id"] for a in alerts if not any(a["id"] in c for c in ticketed))
    assert 1 <= len(without) <= 3, without

    summary = _reconcile_deployment()
    assert sorted(summary["failed"]) == without
    assert summary["unanswered"] == [] and summary["started"] == len(without)
    for alert_id in without:
        (again,) = [r for r in _runs_named(f"graph-{alert_id}")]
        done = _wait_final(again.id)
        assert done.state is not None and done.state.is_completed(), done.state
    _assert_answered_once(sandbox, [a["id"] for a in alerts])
    assert UUID(batch_id) not in {r.id for a in without for r in _runs_named(f"graph-{a}")}
