"""Microsoft Graph security alerts_v2: list (with $filter, $orderby, $top and paging), get,
update, comment; the incidents the alerts name, and the loading of alerts."""

from __future__ import annotations

import copy
import hashlib
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.alert_store import AlertSpelling, apply_change, store_alerts
from riposte.sandbox.graph.api import (
    GRAPH_ROOT,
    bad_request,
    graph_body,
    graph_error,
    graph_forbidden,
    router,
)
from riposte.sandbox.identity import needs_role
from riposte.sandbox.odata import (
    CLASSIFICATIONS,
    DETERMINATIONS,
    ODataError,
    parse_filter,
    parse_orderby,
    sort_key,
)
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import int_option

MAX_TOP = 2000
COMMENT_TYPES = frozenset(
    {"microsoft.graph.security.alertComment", "#microsoft.graph.security.alertComment"}
)
WRITABLE_STATUSES = ("new", "inProgress", "resolved")
# Graph's names for what alert_store fills in and moves (Defender for Endpoint has its own).
SPELLING = AlertSpelling(
    created="createdDateTime",
    updated="lastUpdateDateTime",
    resolved="resolvedDateTime",
    new_status="new",
    resolved_status="resolved",
    comment_by="createdByDisplayName",
    comment_at="createdDateTime",
)

# Evolvable enum members: declared after `unknownFutureValue` in Graph's schema, so they are
# only sent to clients that opt in with `Prefer: include-unknown-enum-members`; others read
# `unknownFutureValue` instead.
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

_ALERT_READ = ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All")
_ALERT_WRITE = ("SecurityAlert.ReadWrite.All",)


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


@router.get("/security/alerts_v2", dependencies=[Depends(needs_role(_ALERT_READ, graph_forbidden))])
async def list_alerts(request: Request) -> JSONResponse:
    state = get_state(request)
    params = request.query_params
    try:
        clauses = parse_filter(params["$filter"]) if "$filter" in params else []
        order_field, descending = parse_orderby(params.get("$orderby", "createdDateTime desc"))
    except ODataError as exc:
        raise bad_request(str(exc)) from None
    top = int_option(request, "$top", MAX_TOP, bad_request)
    if top > MAX_TOP:
        raise bad_request(
            f"The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the"
            f" incoming request is '{top}'."
        )
    skip = int_option(request, "$skip", 0, bad_request)
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


@router.patch(
    "/security/alerts_v2/{alert_id}",
    dependencies=[Depends(needs_role(_ALERT_WRITE, graph_forbidden))],
)
async def update_alert(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    update = _validated_update(await graph_body(request))
    apply_change(alert, update, state.graph_clock.next(), SPELLING)
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
    """`POST .../comments` of an alert or an incident (whose comments have the alert's shape):
    200 with the whole comment list."""
    body = await graph_body(request)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    odata_type = body.get("@odata.type")
    if odata_type is not None and odata_type not in COMMENT_TYPES:
        raise bad_request(f"Invalid @odata.type '{odata_type}' for an {kind} comment.")
    comment = body.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise bad_request("Invalid request body: the comment must be a non-empty string.")
    apply_change(target, {}, state.graph_clock.next(), SPELLING, comment)
    return JSONResponse(
        {
            "@odata.context": (
                f"{GRAPH_ROOT}/$metadata#Collection(microsoft.graph.security.alertComment)"
            ),
            "value": copy.deepcopy(target["comments"]),
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
    return store_alerts(state, payloads, SPELLING, state.graph.alerts, ensure_incident)
