"""Defender for Cloud security alerts on ARM: list per subscription (nextLink), get, set state."""

from __future__ import annotations

import base64
import binascii
import copy
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.identity import ARM_AUDIENCES, check_bearer
from riposte.sandbox.samples import ASC_LOCATION
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import base_url

API_VERSIONS = ("2022-01-01", "2021-01-01", "2020-01-01", "2019-01-01")
# POST .../alerts/{name}/{action} -> the status it sets.
ACTIONS = {
    "dismiss": "Dismissed",
    "resolve": "Resolved",
    "activate": "Active",
    "inProgress": "InProgress",
}
ALERTS = "providers/Microsoft.Security/alerts"
ALERT = "providers/Microsoft.Security/locations/{location}/alerts/{name}"


def arm_error(status: int, code: str, message: str) -> JSONResponse:
    request_id = str(uuid.uuid4())
    headers = {"x-ms-request-id": request_id, "x-ms-correlation-request-id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer authorization_uri="https://login.microsoftonline.com/", error="invalid_token",'
            ' error_description="The authentication failed."'
        )
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _unauthorized(message: str) -> JSONResponse:
    if "empty" in message:
        return arm_error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
    if "expired" in message:
        return arm_error(401, "ExpiredAuthenticationToken", "The access token has expired.")
    return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")


def _wrong_audience(audience: str) -> JSONResponse:
    allowed = "','".join(sorted(ARM_AUDIENCES | {f"{a}/" for a in ARM_AUDIENCES}))
    return arm_error(
        401,
        "InvalidAuthenticationTokenAudience",
        f"The access token has been obtained for wrong audience or resource '{audience}'. It"
        f" should exactly match with one of the allowed audiences '{allowed}'.",
    )


async def require_arm_token(request: Request) -> None:
    check_bearer(request, ARM_AUDIENCES, _unauthorized, _wrong_audience)
    version = request.query_params.get("api-version")
    if not version:
        raise Reject(
            arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        )
    if version not in API_VERSIONS:
        raise Reject(
            arm_error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are"
                f" '{','.join(API_VERSIONS)}'.",
            )
        )


router = APIRouter(prefix="/arm", dependencies=[Depends(require_arm_token)])


def subscription_of(alert_id: str) -> str:
    parts = alert_id.strip("/").split("/")
    return parts[1].lower() if len(parts) > 1 and parts[0].lower() == "subscriptions" else ""


def _known_subscription(state: SandboxState, subscription: str) -> None:
    wanted = subscription.lower()
    known = {s.lower() for s in state.config.subscription_ids}
    if wanted not in known:
        raise Reject(
            arm_error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{subscription}' could not be found.",
            )
        )


def _newest_first(alert: dict[str, Any]) -> tuple[int, str]:
    generated = (alert.get("properties") or {}).get("timeGeneratedUtc")
    ticks = parse_ticks(generated) if isinstance(generated, str) else None
    return (ticks if ticks is not None else -1, str(alert.get("id")).lower())


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Reject(arm_error(400, "InvalidSkipToken", "The skip token is invalid.")) from None


def _listing(request: Request, subscription: str, group: str | None) -> JSONResponse:
    state = get_state(request)
    _known_subscription(state, subscription)
    prefix = f"/subscriptions/{subscription}/".lower()
    if group is not None:
        prefix += f"resourcegroups/{group}/".lower()
    found = [a for key, a in state.defender_cloud.alerts.items() if key.startswith(prefix)]
    found.sort(key=_newest_first, reverse=True)
    start = _offset(request.query_params.get("$skipToken"))
    size = state.defender_cloud.page_size
    body: dict[str, Any] = {"value": copy.deepcopy(found[start : start + size])}
    if start + size < len(found):
        token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        # Absolute, on the host the client called, like ARM's own nextLink.
        body["nextLink"] = (
            f"{base_url(request)}{request.url.path}"
            f"?api-version={request.query_params['api-version']}&$skipToken={token}"
        )
    return JSONResponse(body)


@router.get(f"/subscriptions/{{subscription}}/{ALERTS}")
async def list_by_subscription(subscription: str, request: Request) -> JSONResponse:
    return _listing(request, subscription, None)


@router.get(f"/subscriptions/{{subscription}}/resourceGroups/{{group}}/{ALERTS}")
async def list_by_group(subscription: str, group: str, request: Request) -> JSONResponse:
    return _listing(request, subscription, group)


def _find(
    state: SandboxState, subscription: str, group: str | None, location: str, name: str
) -> dict[str, Any]:
    tail = f"/providers/microsoft.security/locations/{location}/alerts/{name}".lower()
    head = f"/subscriptions/{subscription}".lower()
    for key, alert in state.defender_cloud.alerts.items():
        if not (key.startswith(head + "/") and key.endswith(tail)):
            continue
        middle = key[len(head) : -len(tail)]
        if group is None or middle == f"/resourcegroups/{group}".lower():
            return alert
    _known_subscription(state, subscription)
    raise Reject(arm_error(404, "AlertNotFound", f"Alert '{name}' was not found."))


@router.get(f"/subscriptions/{{subscription}}/{ALERT}")
async def get_alert(subscription: str, location: str, name: str, request: Request) -> JSONResponse:
    alert = _find(get_state(request), subscription, None, location, name)
    return JSONResponse(copy.deepcopy(alert))


@router.get(f"/subscriptions/{{subscription}}/resourceGroups/{{group}}/{ALERT}")
async def get_group_alert(
    subscription: str, group: str, location: str, name: str, request: Request
) -> JSONResponse:
    alert = _find(get_state(request), subscription, group, location, name)
    return JSONResponse(copy.deepcopy(alert))


def _change(
    request: Request, subscription: str, group: str | None, location: str, name: str, action: str
) -> Response:
    status = ACTIONS.get(action)
    if status is None:
        raise Reject(
            arm_error(
                404,
                "InvalidResourceType",
                f"The resource type 'alerts/{action}' could not be found in the namespace"
                " 'Microsoft.Security'.",
            )
        )
    alert = _find(get_state(request), subscription, group, location, name)
    alert.setdefault("properties", {})["status"] = status
    # 204 and no body: the client must not expect the updated alert back.
    return Response(status_code=204)


@router.post(f"/subscriptions/{{subscription}}/{ALERT}/{{action}}")
async def change_state(
    subscription: str, location: str, name: str, action: str, request: Request
) -> Response:
    return _change(request, subscription, None, location, name, action)


@router.post(f"/subscriptions/{{subscription}}/resourceGroups/{{group}}/{ALERT}/{{action}}")
async def change_group_state(
    subscription: str, group: str, location: str, name: str, action: str, request: Request
) -> Response:
    return _change(request, subscription, group, location, name, action)


def load_alerts(state: SandboxState, payloads: list[dict[str, Any]]) -> list[str]:
    """Store alerts as given (ARM ids kept); an alert without an id goes to the first
    configured subscription, at subscription level. An alert of a subscription the simulated
    tenant does not hold is refused (`ValueError`, naming the ones it holds), all of them before
    any is stored: ARM would answer SubscriptionNotFound for it to every later call."""
    known = {s.lower() for s in state.config.subscription_ids}
    for payload in payloads:
        given = str(payload.get("id") or "")
        if given and subscription_of(given) not in known:
            raise ValueError(
                f"alert {given!r}: the sandbox's tenant holds the subscriptions "
                f"{', '.join(state.config.subscription_ids)} (RIPOSTE_SANDBOX_SUBSCRIPTION_IDS),"
                f" not {subscription_of(given) or 'none (the id is not an ARM id)'!r}"
            )
    ids: list[str] = []
    for payload in payloads:
        alert = copy.deepcopy(payload)
        properties: dict[str, Any] = alert.setdefault("properties", {})
        name = str(alert.get("name") or properties.get("systemAlertId") or uuid.uuid4())
        alert_id = str(
            alert.get("id")
            or f"/subscriptions/{state.config.subscription_ids[0]}/providers/Microsoft.Security/"
            f"locations/{ASC_LOCATION}/alerts/{name}"
        )
        alert["id"] = alert_id
        alert.setdefault("name", alert_id.rsplit("/", 1)[-1])
        alert.setdefault("type", "Microsoft.Security/Locations/alerts")
        properties.setdefault("status", "Active")
        properties.setdefault("systemAlertId", alert["name"])
        if not properties.get("timeGeneratedUtc"):
            properties["timeGeneratedUtc"] = state.graph_clock.next()
        if not properties.get("processingEndTimeUtc"):
            properties["processingEndTimeUtc"] = properties["timeGeneratedUtc"]
        state.defender_cloud.alerts[alert_id.lower()] = alert
        ids.append(alert_id)
    return ids
