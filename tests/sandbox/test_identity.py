"""The Entra ID simulator: the token endpoint, and one token per resource."""

from __future__ import annotations

import secrets

import pytest

from tests.sandbox.helpers import (
    ARM_SCOPE,
    ARM_VERSION,
    GRAPH_SCOPE,
    MDCA_ALERTS,
    MDCA_SCOPE,
    MDE_ALERTS,
    MDE_SCOPE,
    Sandbox,
    arm_alerts_path,
    bearer,
)

# --- identity ---------------------------------------------------------------------------------


def test_token_endpoint_issues_bearer_token_with_configured_lifetime_and_counts_it(
    sb: Sandbox,
) -> None:
    first, second = sb.token(), sb.token()
    assert first != second
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    )
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == sb.config.token_lifetime_seconds
    assert sb.http.get("/_sandbox/identity").json()["tokens_issued"] == 3


@pytest.mark.parametrize("wrong", ["tenant", "client_id", "client_secret"])
def test_token_endpoint_rejects_wrong_credentials_with_401_invalid_client(
    sb: Sandbox, wrong: str
) -> None:
    form = {
        "client_id": sb.config.client_id,
        "client_secret": sb.config.client_secret,
        "grant_type": "client_credentials",
        "scope": GRAPH_SCOPE,
    }
    tenant = sb.config.tenant_id
    if wrong == "tenant":
        tenant = "another-tenant"
    else:
        form[wrong] = "wrong-" + secrets.token_hex(4)
    response = sb.http.post(f"/login/{tenant}/oauth2/v2.0/token", data=form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"].startswith("AADSTS")
    assert sb.config.client_secret not in response.text
    assert sb.http.get("/_sandbox/identity").json()["tokens_issued"] == 0


def test_wrong_secret_error_names_aadsts7000215_without_echoing_the_secret(sb: Sandbox) -> None:
    sent = "my-leaked-" + secrets.token_hex(8)
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sb.config.client_id,
            "client_secret": sent,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    )
    assert response.status_code == 401
    assert "AADSTS7000215" in response.json()["error_description"]
    assert sent not in response.text


@pytest.mark.parametrize("grant_type", [None, "password", "authorization_code"])
def test_token_endpoint_requires_client_credentials_grant(
    sb: Sandbox, grant_type: str | None
) -> None:
    form = {
        "client_id": sb.config.client_id,
        "client_secret": sb.config.client_secret,
        "scope": GRAPH_SCOPE,
    }
    if grant_type:
        form["grant_type"] = grant_type
    response = sb.http.post(f"/login/{sb.config.tenant_id}/oauth2/v2.0/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_token_endpoint_reads_form_bodies_only_so_json_is_refused(sb: Sandbox) -> None:
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        json={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE,
        },
    )
    assert response.status_code == 400


# --- identity: one token per resource ---------------------------------------------------------


def test_token_for_a_resource_the_tenant_does_not_know_is_refused_as_aadsts500011(
    sb: Sandbox,
) -> None:
    response = sb.http.post(
        f"/login/{sb.config.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": sb.config.client_id,
            "client_secret": sb.config.client_secret,
            "grant_type": "client_credentials",
            "scope": "https://api.example.invalid/.default",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_resource"
    assert "AADSTS500011" in response.json()["error_description"]


def test_identity_counts_tokens_per_audience(sb: Sandbox) -> None:
    for scope in (GRAPH_SCOPE, MDE_SCOPE, MDE_SCOPE, MDCA_SCOPE, ARM_SCOPE):
        sb.token(scope)
    assert sb.http.get("/_sandbox/identity").json()["audiences"] == {
        "https://graph.microsoft.com": 1,
        "https://api.securitycenter.microsoft.com": 2,
        "05a65629-4c1b-48c1-a78b-804c4abdd4af": 1,
        "https://management.azure.com": 1,
    }


@pytest.mark.parametrize(
    ("api", "scopes_refused", "scope_accepted"),
    [
        (
            "mde",
            [GRAPH_SCOPE, ARM_SCOPE, MDCA_SCOPE, "https://api.security.microsoft.com/.default"],
            MDE_SCOPE,
        ),
        ("mdca", [GRAPH_SCOPE, MDE_SCOPE, ARM_SCOPE], MDCA_SCOPE),
        ("arm", [GRAPH_SCOPE, MDE_SCOPE, MDCA_SCOPE], ARM_SCOPE),
    ],
)
def test_each_defender_api_accepts_only_a_token_for_its_own_resource(
    sb: Sandbox, api: str, scopes_refused: list[str], scope_accepted: str
) -> None:
    path = {
        "mde": MDE_ALERTS,
        "mdca": MDCA_ALERTS,
        "arm": arm_alerts_path(sb.config.subscription_ids[0]),
    }[api]
    for scope in scopes_refused:
        response = sb.http.get(path, headers=bearer(sb, scope), params=ARM_VERSION)
        assert response.status_code == 401, scope
    accepted = sb.http.get(path, headers=bearer(sb, scope_accepted), params=ARM_VERSION)
    assert accepted.status_code == 200
