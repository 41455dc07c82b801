"""Microsoft Graph security incidents: get (with `$expand=alerts`), list, update, comment.

As the Graph documentation has them (security-incident-get / -update / -post-comments): an
incident groups the alerts that carry its id in `incidentId`; PATCH takes `assignedTo`,
`classification`, `determination`, `status` (`active`, `resolved`, `redirected`) and
`customTags` (the whole list: a PATCH replaces it, so a client that wants to add a tag must
read, add and write) and answers 200 with the updated incident; enum values are
camelCase and anything else is a 400 with Graph's error body; `POST .../comments` answers 200 with
the incident's whole comment list.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.alert_store import COMMENT_AUTHOR
from riposte.sandbox.graph.alerts import append_comment, present, wants_unknown_members
from riposte.sandbox.graph.api import (
    GRAPH_ROOT,
    bad_request,
    graph_body,
    graph_error,
    graph_forbidden,
    router,
)
from riposte.sandbox.identity import needs_role
from riposte.sandbox.odata import CLASSIFICATIONS, DETERMINATIONS, SEVERITIES
from riposte.sandbox.state import Reject, SandboxState, get_state

_INCIDENT_READ = ("SecurityIncident.Read.All", "SecurityIncident.ReadWrite.All")
_INCIDENT_WRITE = ("SecurityIncident.ReadWrite.All",)

INCIDENT_STATUSES = ("active", "resolved", "redirected")
MAX_TAGS = 50
MAX_TAG_LENGTH = 100


def _alerts_of(state: SandboxState, incident_id: str) -> list[dict[str, Any]]:
    return [a for a in state.graph.alerts.values() if str(a.get("incidentId")) == incident_id]


def _incident(state: SandboxState, incident_id: str) -> dict[str, Any]:
    incident = state.graph.incidents.get(incident_id)
    if incident is None:
        raise Reject(
            graph_error(404, "NotFound", f"Incident with id '{incident_id}' was not found.")
        )
    return incident


def _shown(state: SandboxState, incident: dict[str, Any], request: Request) -> dict[str, Any]:
    shown = copy.deepcopy(incident)
    alerts = _alerts_of(state, incident["id"])
    # The incident's severity is its highest alert's (enums order by their declared order).
    severities = [str(a.get("severity") or "unknown") for a in alerts] or [shown["severity"]]
    known = [s for s in severities if s in SEVERITIES]
    if known:
        shown["severity"] = max(known, key=SEVERITIES.index)
    expand = request.query_params.get("$expand", "")
    if expand:
        if expand.strip() != "alerts":
            raise bad_request(f"Could not find a property named '{expand}' on type 'incident'.")
        include_unknown = wants_unknown_members(request)
        shown["alerts"] = [present(a, include_unknown) for a in alerts]
    return shown


def _entity(state: SandboxState, incident: dict[str, Any], request: Request) -> JSONResponse:
    body: dict[str, Any] = {"@odata.context": f"{GRAPH_ROOT}/$metadata#security/incidents/$entity"}
    body.update(_shown(state, incident, request))
    return JSONResponse(body)


@router.get(
    "/security/incidents/{incident_id}",
    dependencies=[Depends(needs_role(_INCIDENT_READ, graph_forbidden))],
)
async def get_incident(incident_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    return _entity(state, _incident(state, incident_id), request)


@router.get(
    "/security/incidents", dependencies=[Depends(needs_role(_INCIDENT_READ, graph_forbidden))]
)
async def list_incidents(request: Request) -> JSONResponse:
    state = get_state(request)
    incidents = sorted(
        state.graph.incidents.values(), key=lambda i: str(i["createdDateTime"]), reverse=True
    )
    raw_top = request.query_params.get("$top", "50")
    if not raw_top.isdigit():
        raise bad_request(f"Invalid value '{raw_top}' for query option $top.")
    top = int(raw_top)
    body = {
        "@odata.context": f"{GRAPH_ROOT}/$metadata#security/incidents",
        "value": [_shown(state, i, request) for i in incidents[:top]],
    }
    return JSONResponse(body)


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise bad_request(
            "Invalid request body: customTags must be a collection of Edm.String values."
        )
    if len(value) > MAX_TAGS or any(len(t) > MAX_TAG_LENGTH or not t.strip() for t in value):
        raise bad_request(
            f"Invalid request body: at most {MAX_TAGS} custom tags of 1 to {MAX_TAG_LENGTH} "
            "characters each."
        )
    return list(value)


def _validated(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    update: dict[str, Any] = {}
    enums = {
        "status": (INCIDENT_STATUSES, "incidentStatus"),
        "classification": (CLASSIFICATIONS, "alertClassification"),
        "determination": (DETERMINATIONS, "alertDetermination"),
    }
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        if key in enums:
            allowed, type_name = enums[key]
            if value not in allowed:
                raise bad_request(
                    f"Invalid request body: cannot convert the literal '{value}' to the expected"
                    f" type 'microsoft.graph.security.{type_name}'."
                )
            update[key] = value
        elif key == "assignedTo":
            if value is not None and not isinstance(value, str):
                raise bad_request("Invalid request body: assignedTo must be a string or null.")
            update[key] = value
        elif key == "customTags":
            update[key] = _tags(value)
        elif key in ("resolvingComment", "summary", "description", "displayName"):
            if value is not None and not isinstance(value, str):
                raise bad_request(f"Invalid request body: {key} must be a string or null.")
            update[key] = value
        else:
            raise bad_request(
                f"Invalid request body: the property '{key}' does not exist on type"
                " 'microsoft.graph.security.incident' or is not writable."
            )
    return update


# Shaped as alerts.update_alert, but an incident has no resolution time and records each PATCH.
@router.patch(
    "/security/incidents/{incident_id}",
    dependencies=[Depends(needs_role(_INCIDENT_WRITE, graph_forbidden))],
)
async def update_incident(incident_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    incident = _incident(state, incident_id)
    update = _validated(await graph_body(request))
    incident.update(update)
    incident["lastUpdateDateTime"] = state.graph_clock.next()
    incident["lastModifiedBy"] = COMMENT_AUTHOR
    state.graph.incident_updates.append({"incident": incident_id, "fields": sorted(update)})
    return _entity(state, incident, request)


@router.post(
    "/security/incidents/{incident_id}/comments",
    dependencies=[Depends(needs_role(_INCIDENT_WRITE, graph_forbidden))],
)
async def comment_incident(incident_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    return await append_comment(state, _incident(state, incident_id), request, "incident")
