"""Containment: actions planned from real alerts of every source, and the Prefect task that
carries one out against the sandbox, once, even when a run is repeated or killed halfway."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from riposte.alerts.containment import (
    ActionKind,
    ContainmentAction,
    ContainmentPlanError,
    external_comment,
    plan_actions,
)
from riposte.alerts.model import Alert, Severity
from riposte.alerts.sources import iter_alert_payloads, parse_alert
from riposte.blocks import DefenderCredentials
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.config import SandboxConfig
from riposte.tasks.containment import ContainmentFailed, ContainmentOutcome, execute_action

FIXTURES = Path(__file__).parent / "fixtures"
COMMENT = "Approved by the SOC"
FAST: dict[str, Any] = {"poll_interval_seconds": 0.01, "deadline_seconds": 20.0}


def fixture_alert(path: str, source: str) -> Alert:
    document = json.loads((FIXTURES / path).read_text())
    return parse_alert(next(iter(iter_alert_payloads(document))), source)


def fresh(alert: Alert) -> Alert:
    """The alert under an id no other test used: task results are kept across tests."""
    return alert.model_copy(update={"id": f"{alert.id}-{uuid.uuid4().hex[:10]}"})


def kinds_and_targets(actions: list[ContainmentAction]) -> list[tuple[str, str]]:
    return [(str(a.kind), a.target) for a in actions]


# --- planning ----------------------------------------------------------------------------------


def test_an_endpoint_alert_plans_its_machine_its_entra_user_and_its_file_hashes() -> None:
    alert = fixture_alert("defender_endpoint/documented_get_alert.json", "defender_endpoint")

    actions = plan_actions(
        alert,
        [ActionKind.ISOLATE_DEVICE, ActionKind.DISABLE_USER, ActionKind.BLOCK_FILE],
        comment=COMMENT,
    )

    assert kinds_and_targets(actions) == [
        ("isolate_device", "111e6dd8c833c8a052ea231ec1b19adaf497b625"),
        # The on-premises DOMAIN\temp123 has no Entra identity; the UPN's object id is used.
        ("disable_user", "11118379-2a59-1111-ac3c-a51eb4a3c627"),
        # rundll32.exe is the process image, a Windows system file: never blocked.
        ("block_file", "dc0ade0c95d6db98882bc8fa6707e64353cd6f7767ff48d6a81a6c2aef21c608"),
    ]
    isolate, disable, block = actions
    assert isolate.label == "temp123.middleeast.corp.microsoft.com"
    assert isolate.parameters == {"comment": COMMENT, "isolation_type": "Full"}
    assert disable.label == "temp123@microsoft.com"
    assert block.label == "suspicious.dll"
    assert block.parameters["indicator_type"] == "FileSha256"
    assert block.parameters["action"] == "AlertAndBlock"
    assert block.parameters["severity"] == "Low"


def test_a_device_known_only_by_its_dns_name_cannot_be_isolated() -> None:
    alert = fixture_alert(
        "defender_endpoint/variant_pascal_case_nulls_unknown_enums.json", "defender_endpoint"
    )

    with pytest.raises(ContainmentPlanError) as refused:
        plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)

    assert "mde_device_id" in str(refused.value)
    assert "build-agent-07.corp.contoso.com" in str(refused.value)
    # The same alert's address and URL can still be blocked.
    blocks = plan_actions(alert, [ActionKind.BLOCK_IP, ActionKind.BLOCK_URL], comment=COMMENT)
    assert [(a.target, a.parameters["indicator_type"]) for a in blocks] == [
        ("198.51.100.23", "IpAddress"),
        ("http://198.51.100.23/stage2.ps1", "Url"),
    ]


def test_a_graph_alert_plans_the_mde_device_of_its_device_evidence() -> None:
    alert = fixture_alert("graph/documented_get_alert.json", "graph")

    (isolate,) = plan_actions(
        alert, ["isolate_device"], comment=COMMENT, isolation_type="Selective"
    )

    assert isolate.target == "73e7e2de709dff64ef64b1d0c30e67fab63279db"
    assert isolate.label == "tempDns"
    assert isolate.parameters["isolation_type"] == "Selective"
    # Its only file is Defender's own sensor, signed by Microsoft.
    with pytest.raises(ContainmentPlanError, match="MsSense.exe.*Microsoft Corporation"):
        plan_actions(alert, [ActionKind.BLOCK_FILE], comment=COMMENT)


def test_a_defender_for_apis_alert_blocks_the_calling_ip_and_never_a_private_one() -> None:
    graph = fixture_alert("graph/defender_for_apis_alert.json", "graph")
    exported = fixture_alert(
        "defender_cloud/defender_for_apis_continuous_export.json", "defender_cloud"
    )

    (from_graph,) = plan_actions(graph, [ActionKind.BLOCK_IP], comment=COMMENT)
    (from_export,) = plan_actions(exported, [ActionKind.BLOCK_IP], comment=COMMENT)

    assert from_graph.target == "203.0.113.45"
    assert from_graph.parameters["severity"] == "High"
    assert from_graph.describe() == (
        "Block IP address 203.0.113.45 (NL) in Defender for Endpoint (AlertAndBlock)"
    )
    # 10.20.0.4, the API's own backend, is in the alert too: it is left out.
    assert from_export.target == "192.0.2.200"


def test_private_and_loopback_addresses_are_refused_with_the_reason() -> None:
    alert = fixture_alert("graph/live_style_alert.json", "graph")
    evidence = [
        {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": address}
        for address in ("10.1.2.3", "127.0.0.1", "::1", "192.168.10.20")
    ]
    internal = parse_alert({**alert.raw, "evidence": evidence}, "graph")

    with pytest.raises(ContainmentPlanError) as refused:
        plan_actions(internal, [ActionKind.BLOCK_IP], comment=COMMENT)

    message = str(refused.value)
    assert "10.1.2.3 is a private address" in message
    assert "127.0.0.1 is a loopback address" in message
    assert "::1 is a loopback address" in message
    assert "192.168.10.20 is a private address" in message


def test_a_cloud_apps_alert_plans_its_entra_user_but_not_its_devices() -> None:
    alert = fixture_alert("cloud_apps/documented_list_alert.json", "cloud_apps")

    actions = plan_actions(
        alert, [ActionKind.REVOKE_SESSIONS, ActionKind.DISABLE_USER], comment=COMMENT
    )

    assert kinds_and_targets(actions) == [
        ("revoke_sessions", "6204bdaf-ad46-4e99-a25d-374a0532c666"),
        ("disable_user", "6204bdaf-ad46-4e99-a25d-374a0532c666"),
    ]
    with pytest.raises(ContainmentPlanError, match="DC3.*mde_device_id"):
        plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)


def test_an_old_endpoint_alert_blocks_its_domain_as_a_domain_indicator() -> None:
    alert = fixture_alert(
        "defender_endpoint/documented_2019_alert_with_alert_files.json", "defender_endpoint"
    )

    (url,) = plan_actions(alert, [ActionKind.BLOCK_URL], comment=COMMENT)

    assert (url.target, url.parameters["indicator_type"]) == ("login.bullguard.com", "DomainName")


def test_plans_are_deterministic_one_action_per_target_and_hashed_on_what_they_do() -> None:
    alert = fixture_alert("graph/live_style_alert.json", "graph")
    kinds = [ActionKind.BLOCK_URL, ActionKind.BLOCK_IP, ActionKind.BLOCK_URL, "disable_user"]
    expires = datetime(2030, 1, 1, tzinfo=UTC)

    first = plan_actions(alert, kinds, comment=COMMENT, expires_at=expires)
    again = plan_actions(alert, kinds, comment=COMMENT, expires_at=expires)
    other = plan_actions(alert, kinds, comment="another comment", expires_at=expires)

    assert first == again
    assert [a.param_hash() for a in first] == [a.param_hash() for a in again]
    assert kinds_and_targets(first) == [
        ("block_url", "http://login-contoso.example/verify"),
        ("block_ip", "198.51.100.23"),
        ("disable_user", "7e9d1c3a-2b4f-4e6a-8c0d-1f2e3d4c5b6a"),
    ]
    assert len({a.param_hash() for a in first}) == 3
    assert all(len(a.param_hash()) == 32 for a in first)
    assert {a.param_hash() for a in first}.isdisjoint(a.param_hash() for a in other)
    assert first[1].parameters["expiration"] == "2030-01-01T00:00:00Z"
    relabelled = first[0].model_copy(update={"label": "something else"})
    assert relabelled.param_hash() == first[0].param_hash()
    assert all("\n" not in a.describe() for a in first)
    assert len(set(first)) == 3  # hashable, despite the parameters dict
    with pytest.raises(ContainmentPlanError, match="does not block"):
        plan_actions(alert, kinds, comment=COMMENT, indicator_action="Allowed")


def test_artifact_keys_name_the_alert_and_keep_each_request_apart() -> None:
    from riposte.alerts.approval import ContainmentRequest
    from riposte.alerts.response import AlertRef
    from riposte.flows.contain import artifact_key

    alert = fixture_alert("graph/live_style_alert.json", "graph")
    block_ip, block_url = (
        plan_actions(alert, [kind], comment=COMMENT)
        for kind in (ActionKind.BLOCK_IP, ActionKind.BLOCK_URL)
    )
    ref = AlertRef(source="graph", alert_id="Da637/Ab_C==..x")

    def request(rule: str, actions: list[ContainmentAction]) -> ContainmentRequest:
        return ContainmentRequest(
            alert=ref,
            alert_title=alert.title,
            severity="high",
            rule=rule,
            actions=tuple(actions),
            defender_block="riposte-defender",
        )

    first = artifact_key(request("block-source", block_ip))
    # Lowercase letters, digits and dashes (what Prefect takes), the alert first.
    assert re.fullmatch(r"containment-graph-da637-ab-c-x-[0-9a-f]{8}", first), first
    assert artifact_key(request("block-source", block_ip)) == first  # stable
    # Requests sharing the alert (another rule, other actions) keep artifacts of their own.
    others = {
        artifact_key(request("another-rule", block_ip)),
        artifact_key(request("block-source", block_url)),
        artifact_key(request("block-source", block_ip + block_url)),
    }
    assert len(others | {first}) == 4
    assert all(k.startswith("containment-graph-da637-ab-c-x-") for k in others)
    outcome = artifact_key(request("block-source", block_ip), "containment-outcome")
    assert outcome == "containment-outcome-" + first.removeprefix("containment-")
    long = ref.model_copy(update={"alert_id": "x" * 300})
    keyed = artifact_key(request("r", block_ip).model_copy(update={"alert": long}))
    assert len(keyed) <= 120 and re.fullmatch(r"containment-graph-x+-[0-9a-f]{8}", keyed)


def test_a_comment_failing_after_the_actions_leaves_the_response_run_their_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The actions ran, then the audit's comment on the alert failed: the response run that
    asked is shown what the actions did, not "failed before it finished"."""
    import logging
    from types import SimpleNamespace

    import riposte.flows.contain as contain
    from riposte.alerts.approval import ContainmentRequest
    from riposte.alerts.response import AlertRef

    alert = fixture_alert("graph/live_style_alert.json", "graph")
    request = ContainmentRequest(
        alert=AlertRef(source="graph", alert_id=alert.id),
        alert_title=alert.title,
        severity="high",
        rule="block-at-once",
        actions=tuple(plan_actions(alert, [ActionKind.BLOCK_IP], comment=COMMENT)),
        automatic=True,
        defender_block="riposte-defender",
    )
    told: list[tuple[str, str, int]] = []
    calls: list[str] = []

    def tell(
        request: Any, run_id: Any, response_run: Any, outcome: str, summary: str, rows: Any
    ) -> None:
        told.append((outcome, summary, len(rows)))
        calls.append("told")

    def comment(*args: Any) -> bool:
        calls.append("comment")
        raise RuntimeError("Microsoft Graph: 503")

    monkeypatch.setattr(contain, "flow_run", SimpleNamespace(get_id=lambda: str(uuid.uuid4())))
    monkeypatch.setattr(contain, "get_run_logger", lambda: logging.getLogger("contain-test"))
    monkeypatch.setattr(contain, "_subject", lambda request: (None, None, alert))
    monkeypatch.setattr(contain, "execute_action", lambda *a: SimpleNamespace(detail=""))
    monkeypatch.setattr(contain, "create_table_artifact", lambda **kw: None)
    monkeypatch.setattr(contain, "comment_alert", comment)
    monkeypatch.setattr(contain, "_tell_response_run", tell)

    with pytest.raises(RuntimeError, match="503"):
        contain.contain_alert.fn(request, uuid.uuid4())
    assert calls == ["told", "comment"]  # told first, and not overwritten after
    ((outcome, summary, rows),) = told
    assert outcome == "contained without approval (policy says automatic), done"
    assert "Done: Block IP" in summary and rows == 2

    # A failure before the actions still tells the response run that the run failed.
    told.clear()
    monkeypatch.setattr(contain, "_subject", lambda request: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        contain.contain_alert.fn(request, uuid.uuid4())
    ((outcome, summary, rows),) = told
    assert outcome == "FAILED" and "failed before it finished: ZeroDivisionError" in summary


# --- the task, against the sandbox -------------------------------------------------------------


@pytest.fixture
def defender(
    prefect_server: str, sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig
) -> DefenderCredentials:
    block = sandbox_blocks(sandbox_url, sandbox_config)["riposte-defender"]
    assert isinstance(block, DefenderCredentials)
    return block


def endpoint_alert(sandbox: httpx.Client) -> Alert:
    """A fresh copy of the documented MDE alert, loaded into the sandbox (which makes its
    machine a known one)."""
    document = json.loads((FIXTURES / "defender_endpoint/documented_get_alert.json").read_text())
    payload = {**document, "id": f"{document['id']}-{uuid.uuid4().hex[:10]}"}
    sandbox.post("/_sandbox/mde/alerts", json=[payload]).raise_for_status()
    return parse_alert(payload, "defender_endpoint")


def machine_actions(sandbox: httpx.Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = sandbox.get("/_sandbox/mde/machineactions").json()
    return listed


def mde_calls(sandbox: httpx.Client) -> int:
    return int(sandbox.get("/_sandbox/requests").json()["services"].get("mde", 0))


def isolated(sandbox: httpx.Client, machine_id: str) -> bool:
    machines = {m["id"]: m for m in sandbox.get("/_sandbox/mde/machines").json()}
    return bool(machines[machine_id]["isolated"])


def test_isolation_is_polled_until_it_succeeds(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)

    outcome = execute_action(defender, alert, action, **FAST)

    assert isinstance(outcome, ContainmentOutcome)
    assert (outcome.kind, outcome.target, outcome.status) == (
        ActionKind.ISOLATE_DEVICE,
        "111e6dd8c833c8a052ea231ec1b19adaf497b625",
        "succeeded",
    )
    assert outcome.label == "temp123.middleeast.corp.microsoft.com"
    assert outcome.started <= outcome.finished
    (stored,) = machine_actions(sandbox)
    assert outcome.machine_action_id == stored["id"]
    assert stored["status"] == "Succeeded"
    assert stored["requestorComment"] == f"{COMMENT} [{alert.correlation_key}]"
    assert isolated(sandbox, action.target)


def test_running_the_same_action_twice_for_an_alert_makes_one_machine_action(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)
    first = execute_action(defender, alert, action, **FAST)
    calls = mde_calls(sandbox)

    second = execute_action(defender, alert, action, **FAST)

    assert second == first
    assert mde_calls(sandbox) == calls  # the persisted result, not a second request
    assert len(machine_actions(sandbox)) == 1


def test_a_rerun_after_the_request_was_sent_waits_on_that_request(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)
    # The run that was killed between its POST and its commit got this far.
    sent = defender.endpoint_client().isolate(action.target, external_comment(alert, action))

    outcome = execute_action(defender, alert, action, **FAST)

    assert outcome.machine_action_id == sent["id"]
    assert "requested earlier for this alert" in outcome.detail
    assert [a["id"] for a in machine_actions(sandbox)] == [sent["id"]]


def test_an_isolation_of_another_alert_is_not_taken_for_this_one(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/mde/machineactions/settings", json={"polls_to_complete": 1})
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)
    other = fresh(alert)
    earlier = defender.endpoint_client().isolate(action.target, external_comment(other, action))
    defender.endpoint_client().machine_action(earlier["id"])  # ends Succeeded

    outcome = execute_action(defender, alert, action, **FAST)

    assert outcome.machine_action_id != earlier["id"]
    assert len(machine_actions(sandbox)) == 2


def test_an_isolation_already_under_way_is_waited_on_rather_than_refused(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)
    analyst = defender.endpoint_client().isolate(action.target, "isolated by hand from the portal")

    outcome = execute_action(defender, alert, action, **FAST)

    # MDE refused a second request (ActiveRequestAlreadyExists); the running one was awaited.
    assert outcome.machine_action_id == analyst["id"]
    assert "already under way" in outcome.detail
    assert [a["status"] for a in machine_actions(sandbox)] == ["Succeeded"]


def test_release_after_isolation_frees_the_machine(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = endpoint_alert(sandbox)
    isolate, release = plan_actions(
        alert, [ActionKind.ISOLATE_DEVICE, ActionKind.RELEASE_DEVICE], comment=COMMENT
    )
    execute_action(defender, alert, isolate, **FAST)
    assert isolated(sandbox, isolate.target)

    outcome = execute_action(defender, alert, release, **FAST)

    assert outcome.status == "succeeded"
    assert [a["type"] for a in machine_actions(sandbox)] == ["Isolate", "Unisolate"]
    assert outcome.machine_action_id == machine_actions(sandbox)[1]["id"]
    assert not isolated(sandbox, isolate.target)


def test_a_failed_isolation_raises_saying_what_failed_on_what_and_why(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)
    sandbox.post(
        "/_sandbox/mde/machineactions/failures", json={"status": "Failed", "type": "Isolate"}
    ).raise_for_status()

    with pytest.raises(ContainmentFailed) as failed:
        execute_action(defender, alert, action, **FAST)

    message = str(failed.value)
    (stored,) = machine_actions(sandbox)  # not retried by the task
    assert message == (
        "containment action failed: Isolate device temp123.middleeast.corp.microsoft.com"
        " (MDE machine 111e6dd8c833c8a052ea231ec1b19adaf497b625) with Full isolation:"
        f" Defender for Endpoint machine action {stored['id']} ended Failed"
    )
    outcome = failed.value.outcome
    assert outcome is not None
    assert (outcome.status, outcome.machine_action_id) == ("failed", stored["id"])
    assert not isolated(sandbox, action.target)


def test_an_isolation_past_the_deadline_is_waited_on_again_by_a_rerun(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/mde/machineactions/settings", json={"polls_to_complete": 1000})
    alert = endpoint_alert(sandbox)
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)

    with pytest.raises(ContainmentFailed, match="still InProgress after 0.3s"):
        execute_action(defender, alert, action, poll_interval_seconds=0.05, deadline_seconds=0.3)
    sandbox.post("/_sandbox/mde/machineactions/settings", json={"polls_to_complete": 1})
    outcome = execute_action(defender, alert, action, **FAST)

    (stored,) = machine_actions(sandbox)
    assert outcome.machine_action_id == stored["id"]
    assert stored["status"] == "Succeeded"


def test_an_unknown_machine_fails_at_once_with_the_vendor_s_reason(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = fresh(fixture_alert("graph/documented_get_alert.json", "graph"))
    (action,) = plan_actions(alert, [ActionKind.ISOLATE_DEVICE], comment=COMMENT)

    with pytest.raises(ContainmentFailed) as failed:
        execute_action(defender, alert, action, **FAST)

    message = str(failed.value)
    assert message.startswith("containment action failed: Isolate device tempDns")
    assert "Microsoft Defender for Endpoint refused it" in message
    assert "ResourceNotFound" in message and "http" not in message
    statuses = sandbox.get("/_sandbox/requests").json()["statuses"]["mde"]
    routes = sandbox.get("/_sandbox/requests").json()["routes"]["mde"]
    # The lookup, then one refused request: a 404 is never retried.
    assert routes["POST /mde/api/machines/{machine_id}/isolate"] == 1
    assert statuses.get("404") == 1


def test_blocking_an_address_twice_keeps_one_indicator(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    first_alert = fresh(fixture_alert("graph/defender_for_apis_alert.json", "graph"))
    second_alert = fresh(first_alert)
    (first,) = plan_actions(first_alert, [ActionKind.BLOCK_IP], comment=COMMENT)
    (second,) = plan_actions(second_alert, [ActionKind.BLOCK_IP], comment=COMMENT)

    one = execute_action(defender, first_alert, first, **FAST)
    two = execute_action(defender, second_alert, second, **FAST)

    (indicator,) = sandbox.get("/_sandbox/mde/indicators").json()
    assert one.indicator_id == two.indicator_id == indicator["id"]
    assert (indicator["indicatorValue"], indicator["indicatorType"], indicator["action"]) == (
        "203.0.113.45",
        "IpAddress",
        "AlertAndBlock",
    )
    assert indicator["description"] == f"{COMMENT} [{second_alert.correlation_key}]"
    assert indicator["severity"] == "High"


def test_disabling_a_user_and_revoking_their_sessions(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    document = json.loads((FIXTURES / "graph/live_style_alert.json").read_text())
    payload = {**document, "id": f"{document['id']}-{uuid.uuid4().hex[:10]}"}
    sandbox.post("/_sandbox/graph/alerts", json=[payload]).raise_for_status()
    alert = parse_alert(payload, "graph")
    disable, revoke = plan_actions(
        alert, [ActionKind.DISABLE_USER, ActionKind.REVOKE_SESSIONS], comment=COMMENT
    )

    disabled = execute_action(defender, alert, disable, **FAST)
    revoked = execute_action(defender, alert, revoke, **FAST)

    (user,) = sandbox.get("/_sandbox/graph/users").json()
    assert user["id"] == disable.target == "7e9d1c3a-2b4f-4e6a-8c0d-1f2e3d4c5b6a"
    assert user["accountEnabled"] is False
    assert user["sessionRevocations"] == 1
    assert (disabled.status, disabled.label) == ("succeeded", "alice@contoso.com")
    assert disabled.detail.startswith("account disabled")
    assert revoked.status == "succeeded"
    # A later revision of the alert runs the step again: the account is disabled already.
    raised = alert.model_copy(update={"severity": Severity.LOW})
    again = execute_action(defender, raised, disable, **FAST)
    assert again.detail.startswith("account was already disabled")


def test_an_unknown_user_fails_with_the_reason(
    defender: DefenderCredentials, sandbox: httpx.Client
) -> None:
    alert = fresh(fixture_alert("graph/live_style_alert.json", "graph"))
    (action,) = plan_actions(alert, [ActionKind.DISABLE_USER], comment=COMMENT)

    with pytest.raises(ContainmentFailed) as failed:
        execute_action(defender, alert, action, **FAST)

    message = str(failed.value)
    assert "Disable Entra ID user alice@contoso.com" in message
    assert "Microsoft Entra ID refused it" in message and "Request_ResourceNotFound" in message
