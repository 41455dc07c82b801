"""Microsoft Graph: security alerts_v2 (list with $filter/$orderby/$top, get, update, comment) and
Entra ID users (get, enable or disable, revoke sign-in sessions)."""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from riposte.sandbox.clock import utcnow
from riposte.sandbox.identity import GRAPH_AUDIENCES, check_bearer, needs_role
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


def graph_forbidden(message: str) -> JSONResponse:
    return graph_error(403, "Forbidden", message)


def _denied(message: str) -> JSONResponse:
    # Directory writes answer as Entra ID does, whatever roles are missing.
    return graph_error(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


_ALERT_READ = ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All")
_ALERT_WRITE = ("SecurityAlert.ReadWrite.All",)
_USER_READ = ("User.Read.All", "User.ReadWrite.All")
_USER_DISABLE = ("User.EnableDisableAccount.All", "User.ReadWrite.All")
_USER_REVOKE = ("User.RevokeSessions.All", "User.ReadWrite.All")


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


router = APIRouter(prefix="/graph/v1.0", dependencies=[Depends(require_graph_token)])


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


@router.get("/security/alerts_v2", dependencies=[Depends(needs_role(_ALERT_READ, graph_forbidden))])
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
    token = params.get("$skiptoken")
    if token is not None:
        if not token.isdigit():
            raise bad_request("The $skiptoken is not valid: follow @odata.nextLink as given.")
        skip += int(token)
    matching = [a for a in state.graph.alerts.values() if all(c.matches(a) for c in clauses)]
    # The service's own order (stable, not by time): `$orderby` is not a documented option of
    # this list, so a client must not rely on it (it is applied only when told to).
    matching.sort(key=lambda a: hashlib.sha256(str(a.get("id")).encode()).hexdigest())
    if state.graph.honor_orderby and "$orderby" in params:
        matching.sort(key=sort_key(order_field), reverse=descending)
    include_unknown = wants_unknown_members(request)
    body: dict[str, Any] = {"@odata.context": f"{GRAPH_ROOT}/$metadata#security/alerts_v2"}
    if params.get("$count", "").lower() == "true":
        body["@odata.count"] = len(matching)
    body["value"] = [present(a, include_unknown) for a in matching[skip : skip + top]]
    if state.graph.next_link and skip + top < len(matching):
        query = [(k, v) for k, v in params.multi_items() if k not in ("$skip", "$skiptoken")]
        query.append(("$skiptoken", str(skip + top)))
        base = str(request.url).split("?", 1)[0]
        body["@odata.nextLink"] = f"{base}?{urlencode(query)}"
    return JSONResponse(body)


def _entity(alert: dict[str, Any], request: Request) -> JSONResponse:
    body = {"@odata.context": f"{GRAPH_ROOT}/$metadata#security/alerts_v2/$entity"}
    body.update(present(alert, wants_unknown_members(request)))
    return JSONResponse(body)


@router.get(
    "/security/alerts_v2/{alert_id}",
    dependencies=[Depends(needs_role(_ALERT_READ, graph_forbidden))],
)
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


async def graph_body(request: Request) -> Any:
    """The request's JSON body, or Graph's 400 saying why it is not one."""
    try:
        return await json_body(request)
    except InvalidBody as exc:
        raise bad_request(f"Invalid request body: {exc}.") from None


@router.patch(
    "/security/alerts_v2/{alert_id}",
    dependencies=[Depends(needs_role(_ALERT_WRITE, graph_forbidden))],
)
async def update_alert(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    body = await graph_body(request)
    update = _validated_update(body)
    now = state.graph_clock.next()
    if "status" in update and update["status"] != alert.get("status"):
        alert["resolvedDateTime"] = now if update["status"] == "resolved" else None
    alert.update(update)
    alert["lastUpdateDateTime"] = now
    return _entity(alert, request)


@router.post(
    "/security/alerts_v2/{alert_id}/comments",
    dependencies=[Depends(needs_role(_ALERT_WRITE, graph_forbidden))],
)
async def add_comment(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    return await append_comment(state, _alert(state, alert_id), request, "alert")


async def append_comment(
    state: SandboxState, target: dict[str, Any], request: Request, kind: str
) -> JSONResponse:
    """`POST .../comments` of an alert or an incident: 200 with the whole comment list."""
    body = await graph_body(request)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    odata_type = body.get("@odata.type")
    if odata_type is not None and odata_type not in COMMENT_TYPES:
        raise bad_request(f"Invalid @odata.type '{odata_type}' for an {kind} comment.")
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise bad_request("Invalid request body: the comment must be a non-empty string.")
    now = state.graph_clock.next()
    comments: list[dict[str, Any]] = target.setdefault("comments", [])
    comments.append(
        {"comment": comment, "createdByDisplayName": COMMENT_AUTHOR, "createdDateTime": now}
    )
    target["lastUpdateDateTime"] = now
    return JSONResponse(
        {
            "@odata.context": (
                f"{GRAPH_ROOT}/$metadata#Collection(microsoft.graph.security.alertComment)"
            ),
            "value": copy.deepcopy(comments),
        }
    )


def ensure_incident(state: SandboxState, alert: dict[str, Any]) -> None:
    """The incident an alert names, made when its first alert arrives (Defender correlates
    alerts into incidents as they come)."""
    incident_id = alert.get("incidentId")
    if incident_id in (None, ""):
        return
    incident_id = str(incident_id)
    incidents = state.graph.incidents
    if incident_id in incidents:
        return
    tenant = alert.get("tenantId") or state.config.tenant_id
    incidents[incident_id] = {
        "id": incident_id,
        "incidentWebUrl": f"https://security.microsoft.com/incidents/{incident_id}?tid={tenant}",
        "redirectIncidentId": None,
        "displayName": str(alert.get("title") or "Incident"),
        "description": None,
        "tenantId": tenant,
        "createdDateTime": alert.get("createdDateTime") or state.graph_clock.next(),
        "lastUpdateDateTime": alert.get("lastUpdateDateTime") or state.graph_clock.next(),
        "assignedTo": None,
        "classification": "unknown",
        "determination": "unknown",
        "status": "active",
        "severity": alert.get("severity") or "unknown",
        "customTags": [],
        "systemTags": [],
        "comments": [],
        "resolvingComment": None,
        "summary": None,
        "lastModifiedBy": None,
    }


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
        ensure_incident(state, alert)
        ids.append(alert_id)
    return ids


# --- Entra ID users: get, enable or disable, revoke sign-in sessions -------------------------

# What `GET /users/{id}` returns without $select: `accountEnabled` is not among them.
DEFAULT_USER_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
# PATCH-able here, and the JSON type each takes.
_WRITABLE_USER_PROPERTIES: dict[str, type | tuple[type, ...]] = {
    "accountEnabled": bool,
    "displayName": str,
    "jobTitle": (str, type(None)),
    "department": (str, type(None)),
    "officeLocation": (str, type(None)),
    "mobilePhone": (str, type(None)),
}
_PRIVATE = "_"  # keys of a user record that the API never shows
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def user_record(
    object_id: str,
    upn: str,
    display_name: str | None = None,
    *,
    account_enabled: bool = True,
    created: str | None = None,
    sam_account_name: str | None = None,
) -> dict[str, Any]:
    name = display_name or upn.split("@", 1)[0]
    given, _, surname = name.partition(" ")
    return {
        "id": object_id,
        "userPrincipalName": upn,
        "displayName": name,
        "givenName": given or None,
        "surname": surname or None,
        "mail": upn,
        "businessPhones": [],
        "jobTitle": None,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "department": None,
        "accountEnabled": account_enabled,
        "userType": "Member",
        "createdDateTime": created,
        "signInSessionsValidFromDateTime": created,
        "onPremisesSamAccountName": sam_account_name,
        "_sessionRevocations": 0,
    }


def _clean(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _evidence_users(state: SandboxState) -> list[dict[str, str | None]]:
    """Users named by the alerts: Graph userEvidence, MDE User evidence, MDCA accounts."""
    found: list[dict[str, str | None]] = []
    for alert in state.graph.alerts.values():
        evidence = alert.get("evidence")
        for item in evidence if isinstance(evidence, list) else ():
            if not isinstance(item, dict):
                continue
            if not str(item.get("@odata.type", "")).lower().endswith("userevidence"):
                continue
            nested = item.get("userAccount")
            account: dict[str, Any] = nested if isinstance(nested, dict) else {}
            found.append(
                {
                    "id": _clean(account.get("azureAdUserId")),
                    "upn": _clean(account.get("userPrincipalName")),
                    "name": _clean(account.get("displayName")),
                    "sam": _clean(account.get("accountName")),
                }
            )
    for alert in state.endpoint.alerts.values():
        evidence = alert.get("evidence")
        for item in evidence if isinstance(evidence, list) else ():
            if isinstance(item, dict) and str(item.get("entityType", "")).lower() == "user":
                found.append(
                    {
                        "id": _clean(item.get("aadUserId")),
                        "upn": _clean(item.get("userPrincipalName")),
                        "name": None,
                        "sam": _clean(item.get("accountName")),
                    }
                )
    for alert in state.cloud_apps.alerts.values():
        entities = alert.get("entities")
        for item in entities if isinstance(entities, list) else ():
            if isinstance(item, dict) and item.get("type") == "account":
                raw_id = _clean(item.get("id"))
                entra_id = raw_id if raw_id and _GUID_RE.match(raw_id) else None
                found.append(
                    {"id": entra_id, "upn": _clean(item.get("pa")), "name": None, "sam": None}
                )
    return found


def sync_users(state: SandboxState) -> None:
    """Make every user the alerts name (with a UPN) a directory user; known users keep their
    state. A user the alerts give no object id gets a stable one derived from the UPN."""
    users = state.graph.users
    known_upns = {str(u["userPrincipalName"]).lower() for u in users.values()}
    for found in _evidence_users(state):
        upn = found["upn"]
        if not upn or "@" not in upn or upn.lower() in known_upns:
            continue
        object_id = (found["id"] or str(uuid.uuid5(uuid.NAMESPACE_URL, upn.lower()))).lower()
        if object_id in users:
            continue
        users[object_id] = user_record(
            object_id,
            upn,
            found["name"],
            created=state.graph_clock.next(),
            sam_account_name=found["sam"],
        )
        known_upns.add(upn.lower())


def _user(state: SandboxState, key: str) -> dict[str, Any]:
    """The user whose object id or UPN is ``key``, or Graph's 404."""
    sync_users(state)
    wanted = key.strip().lower()
    user = state.graph.users.get(wanted) or next(
        (u for u in state.graph.users.values() if str(u["userPrincipalName"]).lower() == wanted),
        None,
    )
    if user is None:
        raise Reject(
            graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property"
                " objects are not present.",
            )
        )
    return user


def _public(user: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in user.items() if not k.startswith(_PRIVATE)}


@router.get("/users/{user_key}", dependencies=[Depends(needs_role(_USER_READ, _denied))])
async def get_user(user_key: str, request: Request) -> JSONResponse:
    user = _public(_user(get_state(request), user_key))
    select = request.query_params.get("$select")
    if select:
        names = [n.strip() for n in select.split(",") if n.strip()]
        for name in names:
            if name not in user:
                raise bad_request(
                    f"Could not find a property named '{name}' on type 'microsoft.graph.user'."
                )
        context = f"{GRAPH_ROOT}/$metadata#users({','.join(names)})/$entity"
    else:
        names = list(DEFAULT_USER_PROPERTIES)
        context = f"{GRAPH_ROOT}/$metadata#users/$entity"
    body: dict[str, Any] = {"@odata.context": context}
    body.update({name: user.get(name) for name in names})
    return JSONResponse(body)


def _user_bad_request(message: str) -> Reject:
    return Reject(graph_error(400, "Request_BadRequest", message))


@router.patch("/users/{user_key}", dependencies=[Depends(needs_role(_USER_DISABLE, _denied))])
async def update_user(user_key: str, request: Request) -> Response:
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise _user_bad_request(f"Invalid request body: {exc}.") from None
    if not isinstance(body, dict):
        raise _user_bad_request("The request body must be a JSON object.")
    user = _user(get_state(request), user_key)
    update: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        expected = _WRITABLE_USER_PROPERTIES.get(key)
        if expected is None:
            raise _user_bad_request(
                f"Property '{key}' does not exist as a declared property or extension property."
            )
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise _user_bad_request(
                f"Invalid value specified for property '{key}' of resource 'User'."
            )
        update[key] = value
    user.update(update)
    return Response(status_code=204)


@router.post(
    "/users/{user_key}/revokeSignInSessions",
    dependencies=[Depends(needs_role(_USER_REVOKE, _denied))],
)
async def revoke_sign_in_sessions(user_key: str, request: Request) -> Response:
    """204 No Content, as documented (user-revokesigninsessions); a known issue makes tenants
    answer 200 `{"value": true}` today, which the sandbox does when told to."""
    state = get_state(request)
    user = _user(state, user_key)
    user["signInSessionsValidFromDateTime"] = state.graph_clock.next()
    user["_sessionRevocations"] += 1
    if state.graph.revoke_answers_200:
        body = {"@odata.context": f"{GRAPH_ROOT}/$metadata#Edm.Boolean", "value": True}
        return JSONResponse(body)
    return Response(status_code=204)


# --- control: directory users (mounted under /_sandbox) --------------------------------------

control_router = APIRouter(prefix="/graph")


class UserIn(BaseModel):
    """A directory user of the simulated tenant (beyond those its alerts name)."""

    userPrincipalName: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")  # noqa: N815
    id: str | None = None
    displayName: str | None = None  # noqa: N815
    accountEnabled: bool = True  # noqa: N815


class GraphSettings(BaseModel):
    revoke_sessions_status: Literal[200, 204] = Field(
        default=204, description="204 (documented) or 200 (the known issue)"
    )
    next_link: bool = Field(default=True, description="send @odata.nextLink (documented)")
    honor_orderby: bool = Field(default=False, description="apply $orderby (undocumented)")


@control_router.get("/settings")
async def graph_settings(request: Request) -> GraphSettings:
    graph = get_state(request).graph
    return GraphSettings(
        revoke_sessions_status=200 if graph.revoke_answers_200 else 204,
        next_link=graph.next_link,
        honor_orderby=graph.honor_orderby,
    )


@control_router.post("/settings")
async def set_graph_settings(settings: GraphSettings, request: Request) -> GraphSettings:
    graph = get_state(request).graph
    graph.revoke_answers_200 = settings.revoke_sessions_status == 200
    graph.next_link = settings.next_link
    graph.honor_orderby = settings.honor_orderby
    return settings


@control_router.get("/users")
async def users(request: Request) -> list[dict[str, Any]]:
    """Every directory user, with how many times its sign-in sessions were revoked."""
    state = get_state(request)
    sync_users(state)
    return [
        {**_public(u), "sessionRevocations": u["_sessionRevocations"]}
        for u in state.graph.users.values()
    ]


@control_router.post("/users")
async def add_users(items: UserIn | list[UserIn], request: Request) -> dict[str, Any]:
    state = get_state(request)
    ids = []
    for item in items if isinstance(items, list) else [items]:
        object_id = (item.id or str(uuid.uuid4())).lower()
        state.graph.users[object_id] = user_record(
            object_id,
            item.userPrincipalName,
            item.displayName,
            account_enabled=item.accountEnabled,
            created=state.graph_clock.next(),
        )
        ids.append(object_id)
    return {"loaded": len(ids), "ids": ids}
