"""Microsoft Entra ID token endpoint (client credentials), and the bearer check every API uses."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.clock import utcnow
from riposte.sandbox.config import APP_ROLES_BY_API
from riposte.sandbox.state import IssuedToken, Reject, get_state
from riposte.sandbox.web import same

router = APIRouter(prefix="/login")

# Each API accepts only tokens issued for its own resource: a Graph token is refused by MDE.
GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})
# Defender for Endpoint wants the legacy WindowsDefenderATP resource; a token for the new host
# (`https://api.security.microsoft.com`) is issued but the API refuses it.
ENDPOINT_AUDIENCES = frozenset(
    {"https://api.securitycenter.microsoft.com", "fc780465-2017-40d4-a0c5-307022471b92"}
)
CLOUD_APPS_AUDIENCES = frozenset({"05a65629-4c1b-48c1-a78b-804c4abdd4af"})
ARM_AUDIENCES = frozenset({"https://management.azure.com", "https://management.core.windows.net"})
# Resources the simulated tenant knows; a scope for anything else fails as AADSTS500011 does.
KNOWN_RESOURCES = (
    GRAPH_AUDIENCES
    | ENDPOINT_AUDIENCES
    | CLOUD_APPS_AUDIENCES
    | ARM_AUDIENCES
    | {"https://api.security.microsoft.com"}
)


_API_OF_AUDIENCE = (
    (GRAPH_AUDIENCES, "graph"),
    (ENDPOINT_AUDIENCES | {"https://api.security.microsoft.com"}, "endpoint"),
    (CLOUD_APPS_AUDIENCES, "cloud_apps"),
)


def roles_for(audience: str, granted: list[str]) -> tuple[str, ...]:
    """The granted application permissions that belong to ``audience``'s API (ARM has none:
    Azure RBAC decides there)."""
    api = next((name for audiences, name in _API_OF_AUDIENCE if audience in audiences), None)
    if api is None:
        return ()
    own = {role.casefold() for role in APP_ROLES_BY_API[api]}
    return tuple(role for role in granted if role.casefold() in own)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(audience: str, tenant: str, app_id: str, roles: tuple[str, ...], lifetime: int) -> str:
    """An access token shaped as Entra ID's (a JWT whose payload names the audience, tenant,
    app and roles); its signature is random bytes: the sandbox knows its tokens by value."""
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "kid": "riposte-sandbox"}
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": app_id,
        "tid": tenant,
        "idtyp": "app",
        "ver": "1.0",
        "jti": uuid.uuid4().hex,
    }
    if roles:  # Entra ID leaves the claim out when nothing was granted
        claims["roles"] = list(roles)
    return ".".join(
        (
            _b64(json.dumps(header, separators=(",", ":")).encode()),
            _b64(json.dumps(claims, separators=(",", ":")).encode()),
            _b64(secrets.token_bytes(64)),
        )
    )


def audience_of(scope: str) -> str:
    """``https://management.azure.com//.default`` and ``.../.default`` name the same resource."""
    return scope.strip().removesuffix("/.default").rstrip("/")


def aad_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    """An Entra ID error body: ``error`` plus an ``AADSTS`` description with trace ids."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = f"{utcnow():%Y-%m-%d %H:%M:%S}Z"
    body: dict[str, Any] = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id}"
            f" Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return JSONResponse(body, status_code=status)


async def _form(request: Request) -> dict[str, str]:
    # Entra ID only reads form bodies: a JSON body looks like a request with no parameters.
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


_UNKNOWN_TENANT = "Tenant not found. Check to make sure you have the correct tenant ID."
_UNKNOWN_CLIENT = "Application with the given identifier was not found in the directory."
_WRONG_SECRET = (
    "Invalid client secret provided. Ensure the secret being sent in the request is the client"
    " secret value, not the client secret ID."
)


@router.post("/{tenant}/oauth2/v2.0/token")
async def issue_token(tenant: str, request: Request) -> JSONResponse:
    state = get_state(request)
    config = state.config
    form = await _form(request)
    grant_type = form.get("grant_type", "")
    if grant_type != "client_credentials":
        if not grant_type:
            description = "The request body must contain the following parameter: 'grant_type'."
        else:
            description = "The provided value for the input parameter 'grant_type' is not valid."
        return aad_error(400, "unsupported_grant_type", 70003, description)
    scope = form.get("scope", "")
    if not scope:
        return aad_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    # The credentials, in the order Entra ID checks them, each with its own AADSTS error.
    for given, expected, code, description in (
        (tenant, config.tenant_id, 90002, _UNKNOWN_TENANT),
        (form.get("client_id", ""), config.client_id, 700016, _UNKNOWN_CLIENT),
        (form.get("client_secret", ""), config.client_secret, 7000215, _WRONG_SECRET),
    ):
        if not same(given, expected):
            return aad_error(401, "invalid_client", code, description)
    if not scope.endswith("/.default") or " " in scope.strip():
        return aad_error(
            400,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope"
            " value with /.default suffixed to the resource identifier (application ID URI).",
        )
    audience = audience_of(scope)
    if audience not in KNOWN_RESOURCES:
        return aad_error(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {audience} was not found in the tenant named"
            f" {tenant}. This can happen if the application has not been installed by the"
            " administrator of the tenant or consented to by any user in the tenant.",
        )
    lifetime = config.token_lifetime_seconds
    roles = roles_for(audience, config.app_roles)
    token = _jwt(audience, tenant, config.client_id, roles, lifetime)
    state.identity.tokens[token] = IssuedToken(audience, time.monotonic() + lifetime, roles)
    state.identity.issued += 1
    state.identity.issued_by_audience[audience] += 1
    return JSONResponse(
        {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        },
        headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
    )


def check_bearer(
    request: Request,
    audiences: frozenset[str],
    error: Callable[[str], Response],
    wrong_audience: Callable[[str], Response] | None = None,
) -> None:
    """Raise `Reject` built by ``error(message)`` unless a live token for ``audiences`` came.

    ``wrong_audience(audience)``, when given, answers a valid token issued for another
    resource (ARM has its own error code for that).
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Reject(error("Access token is empty."))
    issued = get_state(request).identity.tokens.get(token)
    if issued is None:
        raise Reject(error("Access token validation failure. Invalid token."))
    if issued.expires_at <= time.monotonic():
        raise Reject(error("Lifetime validation failed, the token is expired."))
    if issued.audience not in audiences:
        if wrong_audience is not None:
            raise Reject(wrong_audience(issued.audience))
        raise Reject(error("Access token validation failure. Invalid audience."))


def needs_role(
    any_of: tuple[str, ...], error: Callable[[str], Response]
) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A route dependency: the bearer token must carry one of ``any_of`` in its `roles` claim
    (the application permissions an admin consented to), else ``error(message)``, as the APIs
    answer an app that lacks the permission. Tokens that are not Entra ID's (Cloud Apps' legacy
    API token) are left to the route's own check."""

    async def check(request: Request) -> None:
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        issued = get_state(request).identity.tokens.get(token)
        if issued is None:
            return
        held = {role.casefold() for role in issued.roles}
        if not any(role.casefold() in held for role in any_of):
            granted = ", ".join(issued.roles) or "none"
            raise Reject(
                error(
                    f"Missing application roles. API required roles: {', '.join(any_of)}. "
                    f"Application roles: {granted}."
                )
            )

    return check
