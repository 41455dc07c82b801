"""Several runs of the same alert at once: an operator's Retry of a failed run, reconcile's
re-answer under a key of its own, the same alert again in two batches (a duplicate delivery), on
the session's responder (8 runs at a time, in threads of one process). Whatever the overlap,
each alert ends with one ticket, one alert comment and one message per channel, counted in the
simulators, round after round."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.states import Scheduled

from riposte.alerts.response import AlertRef
from riposte.sandbox.samples import sample_graph_alerts
from riposte.tasks.runs import start_responses
from tests.conftest import wait_until
from tests.test_policy_e2e import flow_run, load

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

ROUNDS = 3
ALERTS = 4


def _alerts(tag: str) -> list[dict[str, Any]]:
    template = sample_graph_alerts(datetime.now(UTC))[0]
    out = []
    for i in range(ALERTS):
        alert = json.loads(json.dumps(template).replace(template["id"], f"{tag}-{i}"))
        alert["incidentId"] = str(700000 + i)
        out.append(alert)
    return out


def _final(run_ids: list[str], timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        runs = {r: flow_run(r) for r in run_ids}
        return runs if all(r.state and r.state.is_final() for r in runs.values()) else None

    found: dict[str, Any] = wait_until(done, timeout=timeout, interval=0.5, what="the runs")
    return found


def _retry(run_id: str) -> None:
    """What `prefect flow-run retry` and the UI's Retry do: the same run back to Scheduled."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), Scheduled(message="Retried"), force=True)


def _batch(refs: list[AlertRef], attempt: int) -> list[str]:
    """A `respond_batch` run holding ``refs`` (a burst in which they came again)."""
    return start_responses(refs, attempt, single_limit=0)


def _count(sandbox: httpx.Client, ids: list[str]) -> dict[str, Counter[str]]:
    """Per alert: tickets (ServiceNow, by correlation id), Slack and Teams messages naming the
    alert or its ticket, comments on the Graph alert."""
    counts = {a: Counter[str]() for a in ids}
    number_of: dict[str, str] = {}
    for incident in sandbox.get("/_sandbox/servicenow/incidents").json():
        record = incident["record"]
        key = str(record.get("correlation_id"))
        for a in ids:
            if key == f"riposte-graph-{a}":
                counts[a]["ticket"] += 1
                number_of[str(record["number"])] = a
    for kind in ("slack", "teams"):
        for message in sandbox.get(f"/_sandbox/{kind}/messages").json():
            text = json.dumps(message.get("payload", message))
            # By the alert's id when the message names one of ours; by its ticket's number only
            # otherwise: the sandbox numbers tickets from INC0010001 again after each reset, and
            # a late message of an earlier test's run may name the same number.
            named = {a for a in ids if a in text} or {
                a for n, a in number_of.items() if re.search(rf"\b{n}\b", text)
            }
            for a in named:
                counts[a][kind] += 1
    graph = {a["id"]: a for a in sandbox.get("/_sandbox/graph/alerts").json()}
    for a in ids:
        counts[a]["comment"] = len(graph[a].get("comments") or [])
    return counts


def _loaded_with_slack_refusing(
    sandbox: httpx.Client, tag: str
) -> tuple[list[str], list[AlertRef], str]:
    """The test's alerts in the sandbox, and Slack refusing every message until the fault (its
    id returned with the alerts' ids and refs) is removed."""
    alerts = _alerts(tag)
    ids = [a["id"] for a in alerts]
    load(sandbox, alerts)
    revision = str(alerts[0]["severity"])
    refs = [AlertRef(source="graph", alert_id=a, revision=revision) for a in ids]
    fault = sandbox.post(
        "/_sandbox/faults", json={"service": "slack", "status": 404, "times": None}
    ).json()["id"]
    return ids, refs, str(fault)


def test_overlapping_runs_of_the_same_alerts_do_each_step_once(sandbox: httpx.Client) -> None:
    once = Counter({"ticket": 1, "slack": 1, "teams": 1, "comment": 1})
    for round_ in range(ROUNDS):
        tag = f"overlap-{os.urandom(3).hex()}-r{round_}"
        # Slack refuses (404: a permanent error, so the runs fail at once): every run fails
        # after its ticket, Teams message and alert comment, as in a Slack outage.
        ids, refs, fault = _loaded_with_slack_refusing(sandbox, tag)
        first = start_responses(refs)
        runs = _final(first)
        assert all(r.state.is_failed() for r in runs.values()), {
            r.name: r.state.name for r in runs.values()
        }
        sandbox.delete(f"/_sandbox/faults/{fault}")

        # Slack is back: the Retry of every failed run, reconcile's re-answer of each alert,
        # and two bursts that carry them again, all started at once.
        with ThreadPoolExecutor(4) as pool:
            retried = pool.map(_retry, first)
            again = pool.submit(start_responses, refs, 1)
            batch_a = pool.submit(_batch, refs, 2)
            batch_b = pool.submit(_batch, list(reversed(refs)), 3)
            list(retried)
            others = again.result() + batch_a.result() + batch_b.result()
        runs = _final(first + others)
        states = Counter(r.state.name for r in runs.values())
        assert all(r.state.is_completed() for r in runs.values()), states

        counts = _count(sandbox, ids)
        wrong = {a: dict(c) for a, c in counts.items() if c != once}
        assert not wrong, f"round {round_}: {wrong} (runs {dict(states)})"


def test_a_batch_is_one_task_run_per_alert_and_its_retry_does_no_step_twice(
    sandbox: httpx.Client,
) -> None:
    """In a batch, an alert's steps are grouped in one task run named after it: the Prefect
    server keeps one task run per alert, not one per step. A Retry of the failed batch finds
    the steps done before (the ticket, the Teams message, the comment) and does only the rest:
    counted in the simulators, one of each per alert."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
    )

    tag = f"grouped-{os.urandom(3).hex()}"
    ids, refs, fault = _loaded_with_slack_refusing(sandbox, tag)
    (batch,) = _batch(refs, 0)
    assert _final([batch])[batch].state.is_failed()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(batch)])), limit=200
        )
    assert sorted(t.name for t in task_runs) == sorted(f"respond graph-{a}" for a in ids)
    assert all(t.state is not None and t.state.is_failed() for t in task_runs)

    sandbox.delete(f"/_sandbox/faults/{fault}")
    _retry(batch)
    assert _final([batch])[batch].state.is_completed()
    once = Counter({"ticket": 1, "slack": 1, "teams": 1, "comment": 1})
    assert {a: c for a, c in _count(sandbox, ids).items() if c != once} == {}
