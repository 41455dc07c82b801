"""The containment simulators and clients over real HTTP: Defender for Endpoint machine actions
(isolate, release, polled to an end) and indicators (submit or update), Entra ID users (get,
disable, revoke sign-in sessions), with the vendors' status codes and error shapes."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from riposte.blocks import DefenderCredentials
from riposte.blocks.defender_endpoint import DefenderEndpointClient
from riposte.blocks.entra import EntraUsersClient
from riposte.blocks.errors import ServiceNotFoundError, ServiceRejectedError
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.config import SandboxConfig
from riposte.sandbox.samples import MDE_DEVICE_ID, USER_ACCOUNT

MACHINE = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"
OTHER_MACHINE = "7b1f4967d9728e5aa3c06a9e617a22a4a5a17378"


@pytest.fixture
def creds(
    sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig
) -> DefenderCredentials:
    block = sandbox_blocks(sandbox_url, sandbox_config)["riposte-defender"]
    assert isinstance(block, DefenderCredentials)
    return block


@pytest.fixture
def mde(creds: DefenderCredentials) -> DefenderEndpointClient:
    return creds.endpoint_client()


@pytest.fixture
def users(creds: DefenderCredentials) -> EntraUsersClient:
    return creds.users_client()


def add_machine(sandbox: httpx.Client, machine_id: str = MACHINE, dns: str = "ws-042") -> None:
    response = sandbox.post(
        "/_sandbox/mde/machines", json={"id": machine_id, "computerDnsName": dns}
    )
    response.raise_for_status()


def machines(sandbox: httpx.Client) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in sandbox.get("/_sandbox/mde/machines").json()}


def actions(sandbox: httpx.Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = sandbox.get("/_sandbox/mde/machineactions").json()
    return listed


def token(sandbox: httpx.Client, config: SandboxConfig, scope: str) -> str:
    response = sandbox.post(
        f"/login/{config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "grant_type": "client_credentials",
            "scope": scope,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def poll_until_final(mde: DefenderEndpointClient, action_id: str) -> list[str]:
    seen = []
    for _ in range(20):
        status = str(mde.machine_action(action_id)["status"])
        seen.append(status)
        if status in ("Succeeded", "Failed", "TimeOut", "Cancelled"):
            return seen
    raise AssertionError(f"machine action never ended: {seen}")


# --- machine actions ---------------------------------------------------------------------------


def test_isolation_is_created_pending_and_succeeds_after_the_configured_polls(
    sandbox: httpx.Client, mde: DefenderEndpointClient
) -> None:
    add_machine(sandbox)
    sandbox.post("/_sandbox/mde/machineactions/settings", json={"polls_to_complete": 3})

    created = mde.isolate(MACHINE, "contain [riposte-x]", "Selective")

    assert created["status"] == "Pending"
    assert created["type"] == "Isolate"
    assert created["scope"] == "Selective"
    assert created["machineId"] == MACHINE
    assert created["computerDnsName"] == "ws-042"
    assert created["requestorComment"] == "contain [riposte-x]"
    assert poll_until_final(mde, created["id"]) == ["InProgress", "InProgress", "Succeeded"]
    assert machines(sandbox)[MACHINE]["isolated"] is True
    assert machines(sandbox)[MACHINE]["isolationType"] == "Selective"


def test_a_second_isolation_while_one_is_pending_is_refused_as_mde_does(
    sandbox: httpx.Client, mde: DefenderEndpointClient
) -> None:
    add_machine(sandbox)
    first = mde.isolate(MACHINE, "first")

    with pytest.raises(ServiceRejectedError) as refused:
        mde.isolate(MACHINE, "second")

    assert refused.value.status_code == 400
    assert "ActiveRequestAlreadyExists" in refused.value.message
    # A release is another type of action: it is accepted while the isolation runs.
    assert mde.release(MACHINE, "release")["type"] == "Unisolate"
    poll_until_final(mde, first["id"])
    assert mde.isolate(MACHINE, "third, after the first ended")["status"] == "Pending"
    assert len(actions(sandbox)) == 3


def test_an_unknown_machine_is_not_found(mde: DefenderEndpointClient) -> None:
    with pytest.raises(ServiceNotFoundError) as missing:
        mde.isolate("0" * 40, "isolate")
    assert missing.value.status_code == 404
    assert "http" not in str(missing.value)
    with pytest.raises(ServiceNotFoundError):
        mde.machine_action("5382f7ea-7557-4ab7-9782-d50480024a4e")


def test_devices_named_by_the_sandbox_alerts_are_known_machines(
    sandbox: httpx.Client, mde: DefenderEndpointClient
) -> None:
    sandbox.post("/_sandbox/mde/alerts/samples").raise_for_status()
    sandbox.post("/_sandbox/graph/alerts/samples").raise_for_status()

    known = machines(sandbox)

    assert known[MDE_DEVICE_ID]["computerDnsName"] == "ws-fin-042.contoso.com"
    assert known[MDE_DEVICE_ID]["isolated"] is False
    assert mde.isolate(MDE_DEVICE_ID, "isolate")["computerDnsName"] == "ws-fin-042.contoso.com"


def test_machine_actions_are_listed_newest_first_for_one_machine_and_type(
    sandbox: httpx.Client, mde: DefenderEndpointClient
) -> None:
    sandbox.post("/_sandbox/mde/machineactions/settings", json={"polls_to_complete": 1})
    add_machine(sandbox)
    add_machine(sandbox, OTHER_MACHINE, "ws-other")
    isolation = mde.isolate(MACHINE, "isolate")
    poll_until_final(mde, isolation["id"])
    release = mde.release(MACHINE, "release")
    mde.isolate(OTHER_MACHINE, "elsewhere")

    listed = mde.machine_actions(MACHINE)

    assert [a["id"] for a in listed] == [release["id"], isolation["id"]]
    assert [a["id"] for a in mde.machine_actions(MACHINE, action_type="Isolate")] == [
        isolation["id"]
    ]
    assert mde.machine_actions("0" * 40) == []


def test_release_ends_the_isolation(sandbox: httpx.Client, mde: DefenderEndpointClient) -> None:
    sandbox.post("/_sandbox/mde/machineactions/settings", json={"polls_to_complete": 1})
    add_machine(sandbox)
    poll_until_final(mde, mde.isolate(MACHINE, "isolate")["id"])
    assert machines(sandbox)[MACHINE]["isolated"] is True

    release = mde.release(MACHINE, "all clear")

    assert release["status"] == "Pending"
    assert poll_until_final(mde, release["id"]) == ["Succeeded"]
    assert machines(sandbox)[MACHINE]["isolated"] is False


def test_a_failure_rule_makes_the_next_matching_action_end_failed_once(
    sandbox: httpx.Client, mde: DefenderEndpointClient
) -> None:
    add_machine(sandbox)
    sandbox.post(
        "/_sandbox/mde/machineactions/failures",
        json={"machine_id": MACHINE, "type": "Isolate", "status": "Failed"},
    ).raise_for_status()

    failed = mde.isolate(MACHINE, "isolate")
    assert failed["status"] == "Pending"
    assert poll_until_final(mde, failed["id"])[-1] == "Failed"
    assert mde.machine_action(failed["id"])["errorHResult"] != 0
    assert machines(sandbox)[MACHINE]["isolated"] is False
    assert poll_until_final(mde, mde.isolate(MACHINE, "again")["id"])[-1] == "Succeeded"


def test_machine_action_requests_are_validated(
    sandbox: httpx.Client, sandbox_config: SandboxConfig
) -> None:
    add_machine(sandbox)
    headers = {
        "Authorization": "Bearer "
        + token(sandbox, sandbox_config, "https://api.securitycenter.microsoft.com/.default")
    }
    no_comment = sandbox.post(
        f"/mde/api/machines/{MACHINE}/isolate", json={"IsolationType": "Full"}, headers=headers
    )
    bad_type = sandbox.post(
        f"/mde/api/machines/{MACHINE}/isolate",
        json={"Comment": "x", "IsolationType": "Partial"},
        headers=headers,
    )
    bad_filter = sandbox.get(
        "/mde/api/machineactions", params={"$filter": "computerName eq 'x'"}, headers=headers
    )

    assert no_comment.status_code == 400
    assert no_comment.json()["error"]["code"] == "InvalidRequestBody"
    assert bad_type.status_code == 400
    assert "IsolationType" in bad_type.json()["error"]["message"]
    assert bad_filter.status_code == 400
    assert actions(sandbox) == []


# --- indicators --------------------------------------------------------------------------------


def test_an_indicator_submitted_twice_is_one_indicator_updated(
    sandbox: httpx.Client, mde: DefenderEndpointClient
) -> None:
    first = mde.submit_indicator(
        "185.220.101.34", "IpAddress", "Alert", "Riposte: test", "first", severity="Medium"
    )
    second = mde.submit_indicator(
        "185.220.101.34",
        "IpAddress",
        "AlertAndBlock",
        "Riposte: test",
        "second",
        severity="High",
        expiration="2030-01-01T00:00:00Z",
    )

    assert second["id"] == first["id"]
    assert second["action"] == "AlertAndBlock"
    assert second["description"] == "second"
    assert second["expirationTime"] == "2030-01-01T00:00:00Z"
    stored = sandbox.get("/_sandbox/mde/indicators").json()
    assert [i["id"] for i in stored] == [first["id"]]
    found = mde.find_indicator("185.220.101.34", "IpAddress")
    assert found is not None and found["id"] == first["id"]
    assert mde.find_indicator("185.220.101.34", "Url") is None
    assert mde.find_indicator("185.220.101.35", "IpAddress") is None


def test_indicator_values_are_checked_against_their_type(mde: DefenderEndpointClient) -> None:
    for value, indicator_type in (
        ("not-a-hash", "FileSha1"),
        ("ab" * 20, "FileSha256"),
        ("10.0.0.0/8", "IpAddress"),
        ("example.com/path", "DomainName"),
    ):
        with pytest.raises(ServiceRejectedError) as refused:
            mde.submit_indicator(value, indicator_type, "AlertAndBlock", "t", "d")
        assert refused.value.status_code == 400, value
        assert "InvalidRequestBody" in refused.value.message
    with pytest.raises(ServiceRejectedError):
        mde.submit_indicator("ab" * 20, "FileSha1", "Audit", "t", "d", generate_alert=False)
    sha1 = mde.submit_indicator("AB" * 20, "FileSha1", "BlockAndRemediate", "t", "d")
    assert sha1["indicatorType"] == "FileSha1"


# --- Entra ID users ----------------------------------------------------------------------------


def test_users_named_by_alert_evidence_are_found_by_object_id_and_upn(
    sandbox: httpx.Client, users: EntraUsersClient
) -> None:
    sandbox.post("/_sandbox/graph/alerts/samples").raise_for_status()

    by_upn = users.get_user(USER_ACCOUNT["userPrincipalName"].upper())
    by_id = users.get_user(USER_ACCOUNT["azureAdUserId"])

    assert by_upn == by_id
    assert by_id.id == USER_ACCOUNT["azureAdUserId"]
    assert by_id.user_principal_name == USER_ACCOUNT["userPrincipalName"]
    assert by_id.display_name == USER_ACCOUNT["displayName"]
    assert by_id.account_enabled is True


def test_disabling_a_user_is_idempotent(sandbox: httpx.Client, users: EntraUsersClient) -> None:
    added = sandbox.post(
        "/_sandbox/graph/users", json={"userPrincipalName": "mallory@contoso.com"}
    ).json()
    object_id = added["ids"][0]

    assert users.disable_user("mallory@contoso.com") is True
    assert users.disable_user(object_id) is False

    assert users.get_user(object_id).account_enabled is False
    stored = {u["id"]: u for u in sandbox.get("/_sandbox/graph/users").json()}
    assert stored[object_id]["accountEnabled"] is False


def test_revoking_sessions_moves_the_sessions_valid_from_time(
    sandbox: httpx.Client, users: EntraUsersClient
) -> None:
    sandbox.post("/_sandbox/graph/users", json={"userPrincipalName": "eve@contoso.com"})
    before = users.get_user("eve@contoso.com").sessions_valid_from

    assert users.revoke_sessions("eve@contoso.com") is True  # 204, as documented

    after = users.get_user("eve@contoso.com").sessions_valid_from
    assert after is not None and before is not None and after > before
    # The known issue: 200 with {"value": true}. Either is a revocation.
    sandbox.post("/_sandbox/graph/settings", json={"revoke_sessions_status": 200})
    assert users.revoke_sessions("eve@contoso.com") is True
    stored = sandbox.get("/_sandbox/graph/users").json()
    assert [u["sessionRevocations"] for u in stored] == [2]


def test_an_unknown_user_is_not_found_in_graph_s_error_shape(
    sandbox: httpx.Client, sandbox_config: SandboxConfig, users: EntraUsersClient
) -> None:
    with pytest.raises(ServiceNotFoundError) as missing:
        users.disable_user("nobody@contoso.com")
    assert "Request_ResourceNotFound" in missing.value.message
    assert missing.value.system == "Microsoft Entra ID"
    assert "http" not in str(missing.value)

    headers = {
        "Authorization": "Bearer "
        + token(sandbox, sandbox_config, "https://graph.microsoft.com/.default")
    }
    raw = sandbox.post("/graph/v1.0/users/nobody@contoso.com/revokeSignInSessions", headers=headers)
    assert raw.status_code == 404
    assert set(raw.json()["error"]) == {"code", "message", "innerError"}


def test_graph_users_behave_like_graph(
    sandbox: httpx.Client, sandbox_config: SandboxConfig
) -> None:
    object_id = secrets.token_hex(4) + "-0000-4000-8000-" + secrets.token_hex(6)
    sandbox.post(
        "/_sandbox/graph/users",
        json={"id": object_id, "userPrincipalName": "trent@contoso.com", "displayName": "T T"},
    )
    headers = {
        "Authorization": "Bearer "
        + token(sandbox, sandbox_config, "https://graph.microsoft.com/.default")
    }
    path = f"/graph/v1.0/users/{object_id}"

    default = sandbox.get(path, headers=headers).json()
    selected = sandbox.get(path, params={"$select": "id,accountEnabled"}, headers=headers).json()
    patched = sandbox.patch(path, json={"accountEnabled": False}, headers=headers)
    wrong_type = sandbox.patch(path, json={"accountEnabled": "false"}, headers=headers)
    unknown = sandbox.patch(path, json={"colour": "blue"}, headers=headers)
    revoked = sandbox.post(f"{path}/revokeSignInSessions", headers=headers)
    mde_token = {
        "Authorization": "Bearer "
        + token(sandbox, sandbox_config, "https://api.securitycenter.microsoft.com/.default")
    }

    # accountEnabled only comes with $select, as in Graph.
    assert "accountEnabled" not in default and default["userPrincipalName"] == "trent@contoso.com"
    assert selected == {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,accountEnabled)/$entity",
        "id": object_id,
        "accountEnabled": True,
    }
    assert patched.status_code == 204 and patched.content == b""
    assert wrong_type.status_code == 400 and unknown.status_code == 400
    assert revoked.status_code == 204 and revoked.content == b""  # the documented answer
    assert sandbox.get(path, headers=mde_token).status_code == 401
