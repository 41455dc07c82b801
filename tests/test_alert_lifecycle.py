"""A ticket's lifecycle back to its alerts, and an analyst's changes read from them, per API.

`resolve` and `reopen` against each simulator over real HTTP: what is written the first time,
that a repeat writes nothing and comments once, what each API cannot do (said, never guessed);
the `_sandbox/{api}/analyst/...` calls that change an alert as a person would in the portal;
and `alert_state`, which reads every API's payload in Graph's spelling.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from riposte.alerts.sources.lifecycle import AlertState, alert_state
from riposte.blocks import DefenderCredentials
from riposte.blocks.alert_sources import AlertSourceClient, Resolution
from riposte.blocks.errors import ServiceRejectedError, ServiceUnavailableError
from riposte.sandbox.samples import sample_alerts_by_source

NOW = datetime.now(UTC)
MARK = "INC0010001 resolved at 2026-12-01T10:00:00Z"
COMMENT = f"Ticket {MARK} by alice@contoso.com: contained, user reset"
REOPEN_MARK = "INC0010001 reopened at 2026-12-02T09:00:00Z"
REOPEN_COMMENT = f"Ticket {REOPEN_MARK} by bob@contoso.com"
CONTROL = {
    "graph": "graph",
    "defender_endpoint": "mde",
    "cloud_apps": "mdca",
    "defender_cloud": "arm",
}
ID_KEY = {"graph": "id", "defender_endpoint": "id", "cloud_apps": "_id", "defender_cloud": "id"}
# Reads that are POSTs: not writes.
READ_ROUTES = frozenset({"POST /mdca/api/v1/alerts/"})

Lab = tuple[DefenderCredentials, httpx.Client]


@pytest.fixture
def lab(private_sandbox: Lab) -> Lab:
    """A sandbox of the test's own, holding the sample alerts of every API: the write counts
    are this test's alone."""
    _, sandbox = private_sandbox
    sandbox.post("/_sandbox/alerts/samples").raise_for_status()
    return private_sandbox


def ids_of(sandbox: httpx.Client, source: str) -> list[str]:
    alerts = sandbox.get(f"/_sandbox/{CONTROL[source]}/alerts").json()
    return sorted(str(a[ID_KEY[source]]) for a in alerts)


def stored(sandbox: httpx.Client, source: str, alert_id: str) -> dict[str, Any]:
    alerts = sandbox.get(f"/_sandbox/{CONTROL[source]}/alerts").json()
    found: dict[str, Any] = next(a for a in alerts if a[ID_KEY[source]] == alert_id)
    return found


def writes(sandbox: httpx.Client, service: str) -> dict[str, int]:
    """The calls of ``service`` that could change something, by route."""
    routes = sandbox.get("/_sandbox/requests").json()["routes"].get(service, {})
    return {
        route: n
        for route, n in routes.items()
        if not route.startswith("GET ") and route not in READ_ROUTES
    }


def analyst(sandbox: httpx.Client, api: str, action: str, **body: Any) -> httpx.Response:
    return sandbox.post(f"/_sandbox/{api}/analyst/{action}", json=body)


def state_of(client: AlertSourceClient, alert_id: str) -> AlertState:
    return client.alert_state(client.get(alert_id))


# --- Graph alerts_v2 ---------------------------------------------------------------------------


def test_graph_resolve_writes_the_verdict_and_one_comment_then_a_repeat_writes_nothing(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "graph")[0]
    source = creds.source_client("graph")

    done = source.resolve(alert_id, "truePositive", "compromisedAccount", COMMENT, MARK)

    assert done == Resolution(("classification", "determination", "status"), True, ())
    alert = stored(sandbox, "graph", alert_id)
    assert (alert["status"], alert["classification"], alert["determination"]) == (
        "resolved",
        "truePositive",
        "compromisedAccount",
    )
    assert alert["resolvedDateTime"]
    assert [c["comment"] for c in alert["comments"]] == [COMMENT]
    before = writes(sandbox, "graph")
    assert before == {
        "POST /graph/v1.0/security/alerts_v2/{alert_id}/comments": 1,
        "PATCH /graph/v1.0/security/alerts_v2/{alert_id}": 1,
    }

    assert source.resolve(alert_id, "truePositive", "compromisedAccount", COMMENT, MARK) == (
        Resolution((), False, ())
    )
    assert writes(sandbox, "graph") == before
    assert len(stored(sandbox, "graph", alert_id)["comments"]) == 1


def test_graph_resolve_that_failed_after_its_comment_is_finished_by_the_repeat_without_a_second(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "graph")[0]
    source = creds.source_client("graph")
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "graph", "method": "PATCH", "status": 400, "times": 1},
    ).raise_for_status()

    with pytest.raises(ServiceRejectedError):
        source.resolve(alert_id, "falsePositive", "notMalicious", COMMENT, MARK)
    assert stored(sandbox, "graph", alert_id)["status"] == "new"

    done = source.resolve(alert_id, "falsePositive", "notMalicious", COMMENT, MARK)
    assert done == Resolution(("classification", "determination", "status"), False, ())
    alert = stored(sandbox, "graph", alert_id)
    assert alert["status"] == "resolved"
    assert [c["comment"] for c in alert["comments"]] == [COMMENT]


def test_graph_resolve_without_a_verdict_keeps_the_one_an_analyst_gave(lab: Lab) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "graph")[0]
    analyst(
        sandbox,
        "graph",
        "resolve",
        alertId=alert_id,
        by="carol@contoso.com",
        classification="truePositive",
        determination="malware",
    ).raise_for_status()
    analyst(sandbox, "graph", "reopen", alertId=alert_id, by="carol@contoso.com").raise_for_status()
    source = creds.source_client("graph")

    done = source.resolve(alert_id, "unknown", "unknown", COMMENT, MARK)

    assert done == Resolution(("status",), True, ())
    state = state_of(source, alert_id)
    assert (state.status, state.classification, state.determination) == (
        "resolved",
        "truePositive",
        "malware",
    )


def test_graph_reopen_puts_a_resolved_alert_in_progress_once(lab: Lab) -> None:
    creds, sandbox = lab
    resolved_id, open_id = ids_of(sandbox, "graph")[:2]
    source = creds.source_client("graph")
    source.resolve(resolved_id, "falsePositive", "notMalicious", COMMENT, MARK)

    assert source.reopen(resolved_id, REOPEN_COMMENT, REOPEN_MARK) == Resolution(
        ("status",), True, ()
    )
    alert = stored(sandbox, "graph", resolved_id)
    assert (alert["status"], alert["resolvedDateTime"]) == ("inProgress", None)
    assert [c["comment"] for c in alert["comments"]] == [COMMENT, REOPEN_COMMENT]
    before = writes(sandbox, "graph")
    assert source.reopen(resolved_id, REOPEN_COMMENT, REOPEN_MARK) == Resolution((), False, ())
    assert source.reopen(open_id, REOPEN_COMMENT, REOPEN_MARK) == Resolution((), False, ())
    assert writes(sandbox, "graph") == before


def test_graph_analyst_changes_look_like_a_person_s_and_the_poll_window_sees_them(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "graph")[0]
    source = creds.source_client("graph")
    before = state_of(source, alert_id)
    assert before.last_updated is not None
    watermark = before.last_updated + timedelta(microseconds=1)
    assert alert_id not in [a["id"] for a in source.list_updated_since(watermark)]

    answer = analyst(
        sandbox,
        "graph",
        "resolve",
        alertId=alert_id,
        by="alice@contoso.com",
        classification="informationalExpectedActivity",
        determination="securityTesting",
        comment="Red team exercise RT-12",
    )

    assert answer.status_code == 200
    comment = answer.json()["comments"][-1]
    assert comment["createdByDisplayName"] == "alice@contoso.com"
    assert comment["comment"] == "Red team exercise RT-12"
    # `$filter=lastUpdateDateTime ge <watermark>`, as the poll asks: the change is in it.
    changed = [a for a in source.list_updated_since(watermark) if a["id"] == alert_id]
    assert len(changed) == 1
    state = source.alert_state(changed[0])
    assert state == AlertState(
        source="graph",
        alert_id=alert_id,
        status="resolved",
        classification="informationalExpectedActivity",
        determination="securityTesting",
        assigned_to=None,
        last_updated=state.last_updated,
        source_status="resolved",
    )
    assert state.last_updated is not None and state.last_updated > before.last_updated

    analyst(
        sandbox,
        "graph",
        "assign",
        alertId=alert_id,
        by="alice@contoso.com",
        assignedTo="bob@contoso.com",
    ).raise_for_status()
    analyst(
        sandbox, "graph", "reopen", alertId=alert_id, by="bob@contoso.com", status="new"
    ).raise_for_status()
    state = state_of(source, alert_id)
    assert (state.status, state.assigned_to) == ("new", "bob@contoso.com")
    assert stored(sandbox, "graph", alert_id)["resolvedDateTime"] is None


# --- Defender for Endpoint -----------------------------------------------------------------


def test_endpoint_resolve_is_one_pascal_case_update_with_its_comment_and_a_repeat_is_none(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "defender_endpoint")[0]
    source = creds.source_client("defender_endpoint")

    done = source.resolve(alert_id, "truePositive", "compromisedAccount", COMMENT, MARK)

    assert done == Resolution(("classification", "determination", "status"), True, ())
    alert = stored(sandbox, "defender_endpoint", alert_id)
    assert (alert["status"], alert["classification"], alert["determination"]) == (
        "Resolved",
        "TruePositive",
        "CompromisedUser",
    )
    assert alert["resolvedTime"]
    assert [c["comment"] for c in alert["comments"]] == [COMMENT]
    assert writes(sandbox, "mde") == {"PATCH /mde/api/alerts/{alert_id}": 1}

    assert source.resolve(alert_id, "truePositive", "compromisedAccount", COMMENT, MARK) == (
        Resolution((), False, ())
    )
    assert writes(sandbox, "mde") == {"PATCH /mde/api/alerts/{alert_id}": 1}
    state = state_of(source, alert_id)
    assert (state.status, state.classification, state.determination) == (
        "resolved",
        "truePositive",
        "compromisedAccount",
    )


def test_endpoint_resolve_whose_answer_was_lost_is_not_written_again(lab: Lab) -> None:
    """The service applied the update, the caller never heard: one PATCH carried status,
    verdict and comment, so the repeat finds everything there and writes nothing."""
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "defender_endpoint")[0]
    source = creds.source_client("defender_endpoint")
    sandbox.post(
        "/_sandbox/faults",
        json={
            "service": "mde",
            "method": "PATCH",
            "status": 503,
            "times": 1,
            "after_handling": True,
        },
    ).raise_for_status()

    with pytest.raises(ServiceUnavailableError):
        source.resolve(alert_id, "falsePositive", "notMalicious", COMMENT, MARK)
    assert source.resolve(alert_id, "falsePositive", "notMalicious", COMMENT, MARK) == (
        Resolution((), False, ())
    )
    alert = stored(sandbox, "defender_endpoint", alert_id)
    assert (alert["status"], alert["classification"]) == ("Resolved", "FalsePositive")
    assert [c["comment"] for c in alert["comments"]] == [COMMENT]


def test_endpoint_refuses_retired_determinations_before_sending_and_keeps_unknown_verdicts(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    first, second = ids_of(sandbox, "defender_endpoint")[:2]
    source = creds.source_client("defender_endpoint")

    for retired in ("apt", "securityPersonnel"):
        with pytest.raises(ServiceRejectedError, match=f"no determination '{retired}'"):
            source.resolve(first, "truePositive", retired, COMMENT, MARK)
    with pytest.raises(ValueError, match="not Graph's"):
        source.resolve(first, "TruePositive", "malware", COMMENT, MARK)
    assert writes(sandbox, "mde") == {}

    # No "Unknown" in this API: the alert is resolved and keeps its (empty) verdict.
    done = source.resolve(second, "unknown", "unknown", COMMENT, MARK)
    assert done == Resolution(("status",), True, ())
    alert = stored(sandbox, "defender_endpoint", second)
    assert (alert["status"], alert["classification"], alert["determination"]) == (
        "Resolved",
        None,
        None,
    )


def test_endpoint_reopen_and_the_analyst_calls(lab: Lab) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "defender_endpoint")[0]
    source = creds.source_client("defender_endpoint")
    before = state_of(source, alert_id)

    resolved = analyst(
        sandbox,
        "mde",
        "resolve",
        alertId=alert_id,
        by="alice@contoso.com",
        classification="falsePositive",
        determination="notEnoughDataToValidate",
        comment="Benign admin tooling",
    ).json()
    assert (resolved["status"], resolved["classification"], resolved["determination"]) == (
        "Resolved",
        "FalsePositive",
        "InsufficientData",
    )
    assert resolved["comments"][-1]["createdBy"] == "alice@contoso.com"
    state = state_of(source, alert_id)
    assert (state.status, state.classification, state.determination) == (
        "resolved",
        "falsePositive",
        "notEnoughDataToValidate",
    )
    assert state.last_updated and before.last_updated and state.last_updated > before.last_updated
    # The poll's `$filter=lastUpdateTime ge ...` finds it.
    assert alert_id in [a["id"] for a in source.list_updated_since(before.last_updated)]

    assert source.reopen(alert_id, REOPEN_COMMENT, REOPEN_MARK) == Resolution(("status",), True, ())
    alert = stored(sandbox, "defender_endpoint", alert_id)
    assert (alert["status"], alert["resolvedTime"]) == ("InProgress", None)
    assert [c["comment"] for c in alert["comments"]][-1] == REOPEN_COMMENT
    assert source.reopen(alert_id, REOPEN_COMMENT, REOPEN_MARK) == Resolution((), False, ())

    assigned = analyst(
        sandbox,
        "mde",
        "assign",
        alertId=alert_id,
        by="alice@contoso.com",
        assignedTo="bob@contoso.com",
    ).json()
    assert assigned["assignedTo"] == "bob@contoso.com"
    assert state_of(source, alert_id).assigned_to == "bob@contoso.com"

    retired = analyst(
        sandbox, "mde", "resolve", alertId=alert_id, by="alice@contoso.com", determination="apt"
    )
    assert retired.status_code == 400
    assert "retired" in retired.json()["detail"]


# --- Defender for Cloud Apps ---------------------------------------------------------------


def test_cloud_apps_resolve_closes_with_the_classification_s_request_once(lab: Lab) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "cloud_apps")[0]
    source = creds.source_client("cloud_apps")

    done = source.resolve(alert_id, "truePositive", "compromisedAccount", COMMENT, MARK)

    assert done.changed == ("classification", "status")
    assert done.comment_added is True
    assert len(done.unsupported) == 1 and done.unsupported[0].startswith("determination:")
    alert = stored(sandbox, "cloud_apps", alert_id)
    assert (alert["resolutionStatusValue"], alert["comment"]) == (5, COMMENT)
    assert writes(sandbox, "mdca") == {"POST /mdca/api/v1/alerts/close_true_positive/": 1}

    again = source.resolve(alert_id, "truePositive", "compromisedAccount", COMMENT, MARK)
    assert (again.changed, again.comment_added) == ((), False)
    assert writes(sandbox, "mdca") == {"POST /mdca/api/v1/alerts/close_true_positive/": 1}

    # Found benign after all: closed again as benign, the comment with the marker kept.
    benign = source.resolve(alert_id, "informationalExpectedActivity", "unknown", COMMENT, MARK)
    assert benign == Resolution(("classification",), False, ())
    alert = stored(sandbox, "cloud_apps", alert_id)
    assert (alert["resolutionStatusValue"], alert["comment"]) == (4, COMMENT)
    state = state_of(source, alert_id)
    assert (state.status, state.classification, state.source_status) == (
        "resolved",
        "informationalExpectedActivity",
        "BENIGN",
    )


def test_cloud_apps_cannot_close_without_a_verdict_nor_reopen_and_says_so(lab: Lab) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "cloud_apps")[0]
    source = creds.source_client("cloud_apps")

    unknown = source.resolve(alert_id, "unknown", "unknown", COMMENT, MARK)
    assert (unknown.changed, unknown.comment_added) == ((), False)
    assert unknown.unsupported[0].startswith("status:")
    assert "stays open" in unknown.unsupported[0]

    source.resolve(alert_id, "falsePositive", "notMalicious", COMMENT, MARK)
    closes = writes(sandbox, "mdca")
    assert closes == {"POST /mdca/api/v1/alerts/close_false_positive/": 1}
    reopened = source.reopen(alert_id, REOPEN_COMMENT, REOPEN_MARK)
    assert reopened.changed == () and reopened.comment_added is False
    assert any("cannot reopen" in why for why in reopened.unsupported)
    assert writes(sandbox, "mdca") == closes
    assert stored(sandbox, "cloud_apps", alert_id)["resolutionStatusValue"] == 3


def test_cloud_apps_analyst_close_is_signed_by_the_person_and_reopen_or_assign_is_refused(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "cloud_apps")[0]
    source = creds.source_client("cloud_apps")
    assert state_of(source, alert_id).status == "new"

    closed = analyst(
        sandbox,
        "mdca",
        "resolve",
        alertId=alert_id,
        by="alice@contoso.com",
        classification="falsePositive",
        comment="Known VPN egress",
    )
    assert closed.status_code == 200
    state = state_of(source, alert_id)
    assert state == AlertState(
        source="cloud_apps",
        alert_id=alert_id,
        status="resolved",
        classification="falsePositive",
        determination=None,
        assigned_to=None,
        last_updated=None,
        source_status="FALSE_POSITIVE",
        handled_by="alice@contoso.com",
    )
    for action, body in (
        ("reopen", {}),
        ("assign", {"assignedTo": "bob@contoso.com"}),
        ("resolve", {"determination": "malware", "classification": "truePositive"}),
        ("resolve", {}),
    ):
        refused = analyst(sandbox, "mdca", action, alertId=alert_id, by="alice@contoso.com", **body)
        assert refused.status_code == 400, (action, body)
        assert "mdca:" in refused.json()["detail"]


# --- Defender for Cloud (ARM) --------------------------------------------------------------


def test_defender_cloud_resolve_dismisses_a_false_positive_and_reports_what_arm_keeps_not(
    lab: Lab,
) -> None:
    creds, sandbox = lab
    first, second = ids_of(sandbox, "defender_cloud")[:2]
    source = creds.source_client("defender_cloud")

    done = source.resolve(first, "truePositive", "malware", COMMENT, MARK)
    assert done.changed == ("status",) and done.comment_added is False
    assert [why.split(":")[0] for why in done.unsupported] == [
        "classification",
        "determination",
        "comment",
    ]
    dismissed = source.resolve(second, "falsePositive", "unknown", "", MARK)
    assert dismissed.changed == ("status",)
    assert [why.split(":")[0] for why in dismissed.unsupported] == ["classification"]
    statuses = [
        stored(sandbox, "defender_cloud", i)["properties"]["status"] for i in (first, second)
    ]
    assert statuses == ["Resolved", "Dismissed"]
    counted = sandbox.get("/_sandbox/requests").json()
    assert counted["statuses"]["arm"]["204"] == 2

    again = source.resolve(first, "truePositive", "malware", COMMENT, MARK)
    assert again.changed == ()
    assert source.resolve(second, "unknown", "unknown", "", MARK) == Resolution((), False, ())
    assert sandbox.get("/_sandbox/requests").json()["statuses"]["arm"]["204"] == 2

    state = state_of(source, second)
    assert (state.status, state.source_status, state.classification) == (
        "resolved",
        "Dismissed",
        None,
    )


def test_defender_cloud_reopen_activates_and_the_analyst_calls(lab: Lab) -> None:
    creds, sandbox = lab
    alert_id = ids_of(sandbox, "defender_cloud")[0]
    source = creds.source_client("defender_cloud")

    assert source.reopen(alert_id, REOPEN_COMMENT, REOPEN_MARK).changed == ()  # Active already
    analyst(
        sandbox, "arm", "resolve", alertId=alert_id, by="alice@contoso.com", dismiss=True
    ).raise_for_status()
    assert state_of(source, alert_id).source_status == "Dismissed"

    reopened = source.reopen(alert_id, REOPEN_COMMENT, REOPEN_MARK)
    assert reopened == Resolution(
        ("status",), False, ("comment: Defender for Cloud alerts have no comments",)
    )
    assert state_of(source, alert_id) == AlertState(
        source="defender_cloud",
        alert_id=alert_id,
        status="new",
        classification=None,
        determination=None,
        assigned_to=None,
        last_updated=None,
        source_status="Active",
    )
    route = (
        "POST /arm/subscriptions/{subscription}/resourceGroups/{group}/providers/"
        "Microsoft.Security/locations/{location}/alerts/{name}/{action}"
    )
    assert writes(sandbox, "arm") == {route: 1}

    analyst(sandbox, "arm", "resolve", alertId=alert_id, by="alice@contoso.com").raise_for_status()
    analyst(
        sandbox, "arm", "reopen", alertId=alert_id, by="alice@contoso.com", status="inProgress"
    ).raise_for_status()
    assert state_of(source, alert_id).status == "inProgress"
    for action, body in (
        ("assign", {"assignedTo": "bob@contoso.com"}),
        ("resolve", {"classification": "truePositive"}),
        ("resolve", {"comment": "Blocked in APIM"}),
    ):
        refused = analyst(sandbox, "arm", action, alertId=alert_id, by="alice@contoso.com", **body)
        assert refused.status_code == 400, (action, body)


# --- every API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(CONTROL))
def test_every_source_resolves_and_reopens_through_the_common_interface(
    lab: Lab, source: str
) -> None:
    creds, sandbox = lab
    client = creds.source_client(source)
    assert isinstance(client, AlertSourceClient)
    alert_id = ids_of(sandbox, source)[0]

    client.resolve(alert_id, "truePositive", "malware", COMMENT, MARK)
    assert state_of(client, alert_id).status == "resolved"
    client.reopen(alert_id, REOPEN_COMMENT, REOPEN_MARK)
    reopened = {
        "graph": "inProgress",
        "defender_endpoint": "inProgress",
        "cloud_apps": "resolved",  # cannot reopen
        "defender_cloud": "new",  # activate: Active
    }[source]
    assert state_of(client, alert_id).status == reopened


def test_unknown_analyst_alert_is_404_and_a_bad_body_is_refused(lab: Lab) -> None:
    _, sandbox = lab
    missing = analyst(sandbox, "graph", "resolve", alertId="da-none", by="alice@contoso.com")
    assert missing.status_code == 404
    not_a_person = analyst(
        sandbox, "graph", "resolve", alertId=ids_of(sandbox, "graph")[0], by="Automation"
    )
    assert not_a_person.status_code == 422


# --- the state of raw payloads -------------------------------------------------------------


def test_alert_state_reads_each_api_s_spelling_into_graph_s() -> None:
    samples = sample_alerts_by_source(NOW)
    graph = dict(
        samples["graph"][0],
        status="inProgress",
        classification="unknown",
        determination=None,
        assignedTo="soc@contoso.com",
        lastUpdateDateTime="2026-12-01T10:00:00.1234567Z",
    )
    state = alert_state("graph", graph)
    assert (state.status, state.classification, state.determination, state.assigned_to) == (
        "inProgress",
        None,
        None,
        "soc@contoso.com",
    )
    assert state.last_updated == datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)

    endpoint = dict(
        samples["defender_endpoint"][0],
        status="Resolved",
        classification="TruePositive",
        determination="Apt",  # retired, still read
        lastUpdateTime="2026-12-01T10:00:00Z",
    )
    state = alert_state("defender_endpoint", endpoint)
    assert (state.status, state.classification, state.determination) == (
        "resolved",
        "truePositive",
        "apt",
    )
    unknown = alert_state(
        "defender_endpoint", dict(endpoint, status="Unknown", determination="NotAvailable")
    )
    assert (unknown.status, unknown.determination, unknown.source_status) == (
        None,
        None,
        "Unknown",
    )

    cloud_apps = samples["cloud_apps"][0]
    read = alert_state("cloud_apps", dict(cloud_apps, statusValue=1, resolutionStatusValue=0))
    legacy = alert_state("cloud_apps", dict(cloud_apps, resolutionStatusValue=2))
    assert (read.status, read.classification) == ("inProgress", None)
    assert (legacy.status, legacy.classification, legacy.source_status) == (
        "resolved",
        None,
        "RESOLVED",
    )

    arm = samples["defender_cloud"][0]
    in_progress = dict(arm, properties={**arm["properties"], "status": "InProgress"})
    assert alert_state("defender_cloud", in_progress).status == "inProgress"
    with pytest.raises(ValueError, match="unknown alert source"):
        alert_state("sentinel", arm)
