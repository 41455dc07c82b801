"""Microsoft Graph security alerts_v2: list with $filter/$orderby/$top, get, update, comment."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.clock import utcnow
from riposte.sandbox.identity import GRAPH_AUDIENCES, check_bearer
from riposte.sandbox.odata import (
    CLASSIFICATIONS,
    DETERMINATIONS,
    ODataError,
    parse_filter,
    parse_orderby,
    sort_key,
)
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import InvalidBody, json_body

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
MAX_TOP = 2000
COMMENT_AUTHOR = "Automation"
COMMENT_TYPES = frozenset(
    {"microsoft.graph.security.alertComment", "#microsoft.graph.security.alertComment"}
)
WRITABLE_STATUSES = ("new", "inProgress", "resolved")

# Evolvable enum members: declared after `unknownFutureValue` in Graph's schema, so they are
# only sent to clients that opt in with `Prefer: include-unknown-enum-members` (pitfall 1).
UNKNOWN_ENUM_MEMBERS: dict[str, frozenset[str]] = {
    "serviceSource": frozenset(
        {"microsoftDefenderForCloud", "microsoftSentinel", "microsoftInsiderRiskManagement"}
    ),
    "detectionSource": frozenset(
        {
            "microsoftDefenderForCloud",
            "microsoftDefenderForIoT",
            "microsoftDefenderForServers",
            "microsoftDefenderForStorage",
            "microsoftDefenderForDNS",
            "microsoftDefenderForDatabases",
            "microsoftDefenderForContainers",
            "microsoftDefenderForNetwork",
            "microsoftDefenderForAppService",
            "microsoftDefenderForKeyVault",
            "microsoftDefenderForResourceManager",
            "microsoftDefenderForApiManagement",
            "nrtAlerts",
            "scheduledAlerts",
            "microsoftDefenderThreatIntelligenceAnalytics",
            "builtInMl",
            "microsoftInsiderRiskManagement",
            "microsoftSentinel",
        }
    ),
}


def graph_error(status: int, code: str, message: str) -> JSONResponse:
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": f"{utcnow():%Y-%m-%dT%H:%M:%S}",
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }
    headers = {"request-id": request_id, "client-request-id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        )
    return JSONResponse(body, status_code=status, headers=headers)


def _unauthorized(message: str) -> JSONResponse:
    return graph_error(401, "InvalidAuthenticationToken", message)


def bad_request(message: str) -> Reject:
    return Reject(graph_error(400, "BadRequest", message))


async def require_graph_token(request: Request) -> None:
    check_bearer(request, GRAPH_AUDIENCES, _unauthorized)


router = APIRouter(prefix="/graph/v1.0/security", dependencies=[Depends(require_graph_token)])


def wants_unknown_members(request: Request) -> bool:
    preferences = ",".join(request.headers.getlist("prefer")).split(",")
    return any(p.strip().lower() == "include-unknown-enum-members" for p in preferences)


def present(alert: dict[str, Any], include_unknown: bool) -> dict[str, Any]:
    shown = copy.deepcopy(alert)
    if not include_unknown:
        for field, members in UNKNOWN_ENUM_MEMBERS.items():
            if shown.get(field) in members:
                shown[field] = "unknownFutureValue"
    return shown


def _alert(state: SandboxState, alert_id: str) -> dict[str, Any]:
    alert = state.graph.alerts.get(alert_id)
    if alert is None:
        raise Reject(graph_error(404, "NotFound", f"Alert with id '{alert_id}' was not found."))
    return alert


def _int_option(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid value '{raw}' for query option {name}.") from None
    if value < 0:
        raise bad_request(f"Invalid value '{raw}' for query option {name}: must be >= 0.")
    return value


@router.get("/alerts_v2")
async def list_alerts(request: Request) -> JSONResponse:
    state = get_state(request)
    params = request.query_params
    try:
        clauses = parse_filter(params["$filter"]) if "$filter" in params else []
        order_field, descending = parse_orderby(params.get("$orderby", "createdDateTime desc"))
    except ODataError as exc:
        raise bad_request(str(exc)) from None
    top = _int_option(request, "$top", MAX_TOP)
    if top > MAX_TOP:
        raise bad_request(
            f"The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the"
            f" incoming request is '{top}'."
        )
    skip = _int_option(request, "$skip", 0)
    matching = [a for a in state.graph.alerts.values() if all(c.matches(a) for c in clauses)]
    matching.sort(key=sort_key(order_field), reverse=descending)
    include_unknown = wants_unknown_members(request)
    body: dict[str, Any] = {"@odata.context": f"{GRAPH_ROOT}/$metadata#security/alerts_v2"}
    if params.get("$count", "").lower() == "true":
        body["@odata.count"] = len(matching)
    # No @odata.nextLink, ever: real tenants often omit it, and clients must page by time.
    body["value"] = [present(a, include_unknown) for a in matching[skip : skip + top]]
    return JSONResponse(body)


def _entity(alert: dict[str, Any], request: Request) -> JSONResponse:
    body = {"@odata.context": f"{GRAPH_ROOT}/$metadata#security/alerts_v2/$entity"}
    body.update(present(alert, wants_unknown_members(request)))
    return JSONResponse(body)


@router.get("/alerts_v2/{alert_id}")
async def get_alert(alert_id: str, request: Request) -> JSONResponse:
    return _entity(_alert(get_state(request), alert_id), request)


def _validated_update(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    update: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        if key == "status":
            valid = value in WRITABLE_STATUSES
            type_name = "alertStatus"
        elif key == "classification":
            valid = value is None or value in CLASSIFICATIONS
            type_name = "alertClassification"
        elif key == "determination":
            valid = value is None or value in DETERMINATIONS
            type_name = "alertDetermination"
        elif key == "assignedTo":
            valid = value is None or isinstance(value, str)
            type_name = "String"
        else:
            raise bad_request(
                f"Invalid request body: the property '{key}' does not exist on type"
                " 'microsoft.graph.security.alert' or is not writable."
            )
        if not valid:
            raise bad_request(
                f"Invalid request body: cannot convert the literal '{value}' to the expected type"
                f" 'microsoft.graph.security.{type_name}'."
            )
        update[key] = value
    return update


@router.patch("/alerts_v2/{alert_id}")
async def update_alert(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise bad_request(f"Invalid request body: {exc}.") from None
    update = _validated_update(body)
    now = state.graph_clock.next()
    if "status" in update and update["status"] != alert.get("status"):
        alert["resolvedDateTime"] = now if update["status"] == "resolved" else None
    alert.update(update)
    alert["lastUpdateDateTime"] = now
    return _entity(alert, request)


@router.post("/alerts_v2/{alert_id}/comments")
async def add_comment(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise bad_request(f"Invalid request body: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    odata_type = body.get("@odata.type")
    if odata_type is not None and odata_type not in COMMENT_TYPES:
        raise bad_request(f"Invalid @odata.type '{odata_type}' for an alert comment.")
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise bad_request("Invalid request body: the comment must be a non-empty string.")
    now = state.graph_clock.next()
    comments: list[dict[str, Any]] = alert.setdefault("comments", [])
    comments.append(
        {"comment": comment, "createdByDisplayName": COMMENT_AUTHOR, "createdDateTime": now}
    )
    alert["lastUpdateDateTime"] = now
    return JSONResponse(
        {
            "@odata.context": (
                f"{GRAPH_ROOT}/$metadata#Collection(microsoft.graph.security.alertComment)"
            ),
            "value": copy.deepcopy(comments),
        }
    )


def load_alerts(state: SandboxState, payloads: list[dict[str, Any]]) -> list[str]:
    """Store alerts as given (ids kept), filling what Graph would always have set."""
    ids: list[str] = []
    for payload in payloads:
        alert = copy.deepcopy(payload)
        alert_id = str(alert.get("id") or f"da{uuid.uuid4().int % 10**18:018d}_{len(ids)}")
        alert["id"] = alert_id
        if not alert.get("createdDateTime"):
            alert["createdDateTime"] = state.graph_clock.next()
        if not alert.get("lastUpdateDateTime"):
            alert["lastUpdateDateTime"] = state.graph_clock.next()
        alert.setdefault("status", "new")
        alert.setdefault("comments", [])
        alert.setdefault("evidence", [])
        state.graph.alerts[alert_id] = alert
        ids.append(alert_id)
    return ids
