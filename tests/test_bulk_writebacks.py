"""Bulk write-backs: Defender for Endpoint's batch update and Defender for Cloud Apps' id
filters, made by the clients and coalesced from concurrent responses, against simulators that
answer as the vendors document (their quotas included).

Each test has a sandbox of its own (`private_sandbox`): they count calls.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest

from riposte.blocks import DefenderCredentials, coalescing
from riposte.blocks.errors import ServiceNotFoundError, ServiceRejectedError
from riposte.sandbox.samples import sample_cloud_apps_alerts, sample_endpoint_alerts

NOW = datetime.now(UTC)
T = TypeVar("T")


def load(sandbox: httpx.Client, api: str, alerts: list[dict[str, Any]]) -> list[str]:
    response = sandbox.post(f"/_sandbox/{api}/alerts", json=alerts)
    response.raise_for_status()
    ids: list[str] = response.json()["ids"]
    return ids


def alerts_of(sandbox: httpx.Client, api: str, key: str) -> dict[str, dict[str, Any]]:
    return {a[key]: a for a in sandbox.get(f"/_sandbox/{api}/alerts").json()}


def routes(sandbox: httpx.Client, service: str) -> dict[str, int]:
    found: dict[str, int] = sandbox.get("/_sandbox/requests").json()["routes"].get(service, {})
    return found


def endpoint_alerts(sandbox: httpx.Client, count: int) -> list[str]:
    template = sample_endpoint_alerts(NOW)[0]
    return load(
        sandbox,
        "mde",
        [dict(template, id=f"da-bulk-{i:03d}", status="New", comments=[]) for i in range(count)],
    )


def cloud_apps_alerts(sandbox: httpx.Client, count: int) -> list[str]:
    template = sample_cloud_apps_alerts(NOW)[0]
    return load(
        sandbox,
        "mdca",
        [dict(template, _id=f"{i:024x}", statusValue=0) for i in range(1, count + 1)],
    )


def at_once(calls: list[Callable[[], T]], linger: float = 0.3) -> list[T | BaseException]:
    """Every call in its own thread, started together, inside `coalescing` (as a batch run
    does); each one's result or exception."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | BaseException:
        start.wait()
        try:
            return call()
        except Exception as exc:  # what that caller would have seen
            return exc

    with coalescing(linger), ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(contextvars.copy_context().run, run, c) for c in calls]
        return [f.result() for f in futures]


# --- the simulators, as documented ----------------------------------------------------------


def test_endpoint_batch_update_sets_many_alerts_in_one_call_and_answers_200_with_no_body(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 5)
    client = creds.endpoint_client()

    client.batch_update(ids[:4], status="InProgress", comment="Ticket INC0010001")

    stored = alerts_of(sandbox, "mde", "id")
    assert [stored[i]["status"] for i in ids] == ["InProgress"] * 4 + ["New"]
    assert [c["comment"] for c in stored[ids[0]]["comments"]] == ["Ticket INC0010001"]
    assert stored[ids[4]]["comments"] == []
    assert routes(sandbox, "mde") == {"POST /mde/api/alerts/batchUpdate": 1}


def test_endpoint_batch_update_refuses_what_the_service_refuses_and_writes_nothing(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 2)
    client = creds.endpoint_client()

    with pytest.raises(ServiceRejectedError, match="Apt"):  # retired in 2022
        client.batch_update(ids, status="Resolved", determination="Apt")
    with pytest.raises(ServiceRejectedError, match="resolved"):  # Graph's spelling
        client.batch_update(ids, status="resolved")
    with pytest.raises(ServiceNotFoundError, match="da-missing"):
        client.batch_update([ids[0], "da-missing"], status="Resolved")
    raw = sandbox.post("/mde/api/alerts/batchUpdate", json={"status": "Resolved"})
    assert raw.status_code == 401  # the simulator checks the token before anything else
    with pytest.raises(ValueError, match="no alert ids"):
        client.batch_update([], status="Resolved")

    assert {a["status"] for a in alerts_of(sandbox, "mde", "id").values()} == {"New"}


# --- coalesced from concurrent responses ----------------------------------------------------


def test_endpoint_acknowledgements_waiting_together_become_one_batch_update(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 12)
    client = creds.endpoint_client()
    payloads = {i: client.get_alert(i) for i in ids}
    comment = "Ticket INC0010042: https://example.service-now.com/INC0010042"

    results = at_once(
        [lambda i=i: client.acknowledge(payloads[i], comment, marker="INC0010042") for i in ids]
    )

    assert all(not isinstance(r, BaseException) for r in results), results
    assert all(r.status_changed and r.comment_added for r in results)  # type: ignore[union-attr]
    stored = alerts_of(sandbox, "mde", "id")
    for alert_id in ids:
        assert stored[alert_id]["status"] == "InProgress"
        assert [c["comment"] for c in stored[alert_id]["comments"]] == [comment]
    counted = routes(sandbox, "mde")
    assert "PATCH /mde/api/alerts/{alert_id}" not in counted
    assert counted["POST /mde/api/alerts/batchUpdate"] == 1

    # Repeated with what Defender now holds: nothing left to write, no call at all.
    again = [client.acknowledge(client.get_alert(i), comment, marker="INC0010042") for i in ids]
    assert not any(a.status_changed or a.comment_added for a in again)
    assert routes(sandbox, "mde")["POST /mde/api/alerts/batchUpdate"] == 1


def test_endpoint_writes_that_differ_are_grouped_apart_and_a_lone_one_is_a_single_update(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 7)
    client = creds.endpoint_client()
    payloads = {i: client.get_alert(i) for i in ids}
    ticket_of = {i: ("INC1" if n < 4 else "INC2" if n < 6 else "INC3") for n, i in enumerate(ids)}

    results = at_once([lambda i=i: client.acknowledge(payloads[i], ticket_of[i]) for i in ids])

    assert all(not isinstance(r, BaseException) for r in results), results
    stored = alerts_of(sandbox, "mde", "id")
    assert {i: [c["comment"] for c in stored[i]["comments"]] for i in ids} == {
        i: [ticket_of[i]] for i in ids
    }
    counted = routes(sandbox, "mde")
    assert counted["POST /mde/api/alerts/batchUpdate"] == 2  # INC1's four, INC2's two
    assert counted["PATCH /mde/api/alerts/{alert_id}"] == 1  # INC3's one, alone


def test_a_bulk_call_refused_whole_falls_back_to_one_call_each_and_only_the_bad_alert_fails(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 4)
    client = creds.endpoint_client()
    payloads = [client.get_alert(i) for i in ids]
    payloads.append(dict(payloads[0], id="da-deleted-meanwhile"))

    results = at_once([lambda p=p: client.acknowledge(p, "INC9") for p in payloads])

    assert all(not isinstance(r, BaseException) for r in results[:4]), results
    assert isinstance(results[4], ServiceNotFoundError)
    assert "da-deleted-meanwhile" in str(results[4])
    stored = alerts_of(sandbox, "mde", "id")
    assert [stored[i]["status"] for i in ids] == ["InProgress"] * 4
    assert all([c["comment"] for c in stored[i]["comments"]] == ["INC9"] for i in ids)
    counted = routes(sandbox, "mde")
    # The batch update refused whole (all or nothing), then one update each.
    assert counted["POST /mde/api/alerts/batchUpdate"] == 1
    assert counted["PATCH /mde/api/alerts/{alert_id}"] == 5


def test_outside_a_batch_nothing_waits_for_company(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 3)
    client = creds.endpoint_client()
    for alert_id in ids:
        client.acknowledge(client.get_alert(alert_id), "INC7")
    assert routes(sandbox, "mde")["PATCH /mde/api/alerts/{alert_id}"] == 3
    assert "POST /mde/api/alerts/batchUpdate" not in routes(sandbox, "mde")


def test_cloud_apps_reads_and_closes_waiting_together_share_one_call_each(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = cloud_apps_alerts(sandbox, 10)
    source = creds.source_client("cloud_apps")

    read = at_once([lambda i=i: source.get(i) for i in [*ids, "0" * 23 + "f"]])
    assert [r["_id"] for r in read[:-1]] == ids  # type: ignore[index]
    assert isinstance(read[-1], ServiceNotFoundError)  # only the missing one fails
    assert routes(sandbox, "mdca") == {"POST /mdca/api/v1/alerts/": 1}

    closed = at_once(
        [lambda i=i: source.close(i, "benign", "Known travel: VPN egress") for i in ids[:6]]
        + [lambda i=i: source.close(i, "false_positive", "Scanner") for i in ids[6:]]
    )
    assert closed == [None] * 10
    stored = alerts_of(sandbox, "mdca", "_id")
    assert [stored[i]["resolutionStatusValue"] for i in ids] == [4] * 6 + [3] * 4
    assert [stored[i]["comment"] for i in ids] == ["Known travel: VPN egress"] * 6 + ["Scanner"] * 4
    counted = routes(sandbox, "mdca")
    assert counted["POST /mdca/api/v1/alerts/close_benign/"] == 1
    assert counted["POST /mdca/api/v1/alerts/close_false_positive/"] == 1


# --- the vendors' quotas in the sandbox -----------------------------------------------------


def test_sandbox_quotas_refuse_past_the_documented_budget_in_the_vendor_s_shape(
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
) -> None:
    creds, sandbox = private_sandbox
    ids = endpoint_alerts(sandbox, 1)
    sandbox.post("/_sandbox/quotas", json={"enabled": True}).raise_for_status()
    token = sandbox.post(
        f"/login/{creds.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": creds.client_id,
            "client_secret": creds.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
            "scope": "https://api.securitycenter.microsoft.com/.default",
        },
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    answers = [
        sandbox.post(
            "/mde/api/alerts/batchUpdate",
            json={"alertIds": ids, "status": "InProgress"},
            headers=auth,
        )
        for _ in range(11)
    ]

    assert [a.status_code for a in answers] == [200] * 10 + [429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The alert API's own budget is apart from the batch update's.
    assert sandbox.get(f"/mde/api/alerts/{ids[0]}", headers=auth).status_code == 200
    report = {q["name"]: q for q in sandbox.get("/_sandbox/quotas").json()}
    assert report["mde-batch-update"]["admitted"] == 10
    assert report["mde-batch-update"]["refused"] == 1
    assert report["mde-batch-update"]["peak"]["60s"] == 10
    assert report["mde"]["admitted"] == 1

    sandbox.post("/_sandbox/quotas", json={"enabled": False}).raise_for_status()
    again = sandbox.post(
        "/mde/api/alerts/batchUpdate", json={"alertIds": ids, "status": "New"}, headers=auth
    )
    assert again.status_code == 200
