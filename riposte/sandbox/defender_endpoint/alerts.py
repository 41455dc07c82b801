"""Defender for Endpoint alerts: ``/api/alerts`` list (with its ``$filter``), get, update and
batch update, and the loading of alerts into the simulated tenant."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.alert_store import AlertSpelling, apply_change, store_alerts
from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.defender_endpoint.api import (
    ALERT_READ,
    ALERT_WRITE,
    MDE_ROOT,
    bad_request,
    forbidden,
    invalid_body,
    mde_error,
    object_body,
    page_bounds,
    router,
)
from riposte.sandbox.defender_endpoint.filters import (
    ALERT_CLAUSE,
    clauses,
    datetime_value,
    quoted_value,
)
from riposte.sandbox.graph.alerts import ensure_incident
from riposte.sandbox.identity import needs_role
from riposte.sandbox.odata import compare
from riposte.sandbox.state import Reject, SandboxState, get_state

STATUSES = ("New", "InProgress", "Resolved")
CLASSIFICATIONS = ("TruePositive", "InformationalExpectedActivity", "FalsePositive")
# The current determinations (update-alert.md). `Apt` and `SecurityPersonnel` were retired in
# August 2022 and are refused, as by the service; alerts classified before may still carry them
# (and `NotAvailable`), so they are read, never written.
DETERMINATIONS = (
    "MultiStagedAttack",
    "MaliciousUserActivity",
    "CompromisedUser",
    "Malware",
    "Phishing",
    "UnwantedSoftware",
    "SecurityTesting",
    "LineOfBusinessApplication",
    "ConfirmedActivity",
    "NotMalicious",
    "InsufficientData",
    "Other",
)
RETIRED_DETERMINATIONS = ("Apt", "SecurityPersonnel", "NotAvailable")
SEVERITIES = ("UnSpecified", "Informational", "Low", "Medium", "High")
# This API's names for what alert_store fills in and moves (Graph has its own).
SPELLING = AlertSpelling(
    created="alertCreationTime",
    updated="lastUpdateTime",
    resolved="resolvedTime",
    new_status="New",
    resolved_status="Resolved",
    comment_by="createdBy",
    comment_at="createdTime",
)

# $filter properties (matched case-insensitively, as the API does) and their kinds.
DATETIME_FIELDS = ("alertCreationTime", "lastUpdateTime", "lastEventTime")
STRING_FIELDS = ("status", "severity", "category", "detectionSource", "assignedTo", "id")
NUMBER_FIELDS = ("incidentId", "investigationId")
_FIELDS = {name.lower(): name for name in (*DATETIME_FIELDS, *STRING_FIELDS, *NUMBER_FIELDS)}
_ENUMS: dict[str, tuple[str, ...]] = {"status": (*STATUSES, "Unknown"), "severity": SEVERITIES}
# This API's severities -> a Graph incident's (which has no "unspecified").
_INCIDENT_SEVERITY = {
    "Informational": "informational",
    "Low": "low",
    "Medium": "medium",
    "High": "high",
}


@dataclass(frozen=True)
class _Clause:
    field: str
    operator: str
    value: int | str | None

    def matches(self, alert: dict[str, Any]) -> bool:
        return compare(self.operator, _comparable(self.field, alert.get(self.field)), self.value)


def _comparable(field: str, value: Any) -> int | str | None:
    if value is None:
        return None
    if field in DATETIME_FIELDS:
        return parse_ticks(str(value))
    if field in NUMBER_FIELDS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return str(value)


def parse_filter(text: str) -> list[_Clause]:
    """``field op value [and ...]``; raises `Reject` with a 400 the way the API answers."""
    parsed: list[_Clause] = []
    for field, operator, raw in clauses(text, _FIELDS, ALERT_CLAUSE):
        value: int | str | None
        if raw == "null":
            value = None
        elif field in DATETIME_FIELDS:
            value = datetime_value(field, raw)
        elif field in NUMBER_FIELDS:
            if raw.startswith("'"):
                raise bad_request(f"Invalid filter clause: {field} is a number, not a string.")
            value = int(raw)
        else:
            value = quoted_value(field, raw)
            allowed = _ENUMS.get(field)
            if allowed is not None and value not in allowed:
                raise bad_request(
                    f"Invalid filter clause: '{value}' is not a valid {field}"
                    f" ({', '.join(allowed)})."
                )
        parsed.append(_Clause(field, operator, value))
    return parsed


def _expands_evidence(request: Request) -> bool:
    expand = request.query_params.get("$expand")
    if expand is None:
        return False
    if expand.strip().lower() != "evidence":
        raise bad_request(f"Invalid $expand '{expand}': only 'evidence' can be expanded.")
    return True


def present(alert: dict[str, Any], with_evidence: bool) -> dict[str, Any]:
    """An alert as the API shows it: evidence only when the client asked for it."""
    shown = copy.deepcopy(alert)
    if not with_evidence:
        shown.pop("evidence", None)
    return shown


def _entity(alert: dict[str, Any], with_evidence: bool) -> JSONResponse:
    body = {"@odata.context": f"{MDE_ROOT}/$metadata#Alerts/$entity"}
    body.update(present(alert, with_evidence))
    return JSONResponse(body)


def _alert(state: SandboxState, alert_id: str) -> dict[str, Any]:
    alert = state.endpoint.alerts.get(alert_id)
    if alert is None:
        raise Reject(mde_error(404, "ResourceNotFound", f"Alert {alert_id} was not found."))
    return alert


def _newest_first(alert: dict[str, Any]) -> tuple[int, str]:
    ticks = _comparable("alertCreationTime", alert.get("alertCreationTime"))
    return (ticks if isinstance(ticks, int) else -1, str(alert.get("id")))


@router.get("/alerts", dependencies=[Depends(needs_role(ALERT_READ, forbidden))])
async def list_alerts(request: Request) -> JSONResponse:
    state = get_state(request)
    params = request.query_params
    wanted = parse_filter(params["$filter"]) if "$filter" in params else []
    skip, top = page_bounds(request)
    with_evidence = _expands_evidence(request)
    matching = [a for a in state.endpoint.alerts.values() if all(c.matches(a) for c in wanted)]
    # No $orderby on this API: the order is the service's (newest alert first), so a client
    # that wants "oldest update first" must sort what it read.
    matching.sort(key=_newest_first, reverse=True)
    return JSONResponse(
        {
            "@odata.context": f"{MDE_ROOT}/$metadata#Alerts",
            "value": [present(a, with_evidence) for a in matching[skip : skip + top]],
        }
    )


@router.get("/alerts/{alert_id}", dependencies=[Depends(needs_role(ALERT_READ, forbidden))])
async def get_alert(alert_id: str, request: Request) -> JSONResponse:
    alert = _alert(get_state(request), alert_id)
    return _entity(alert, _expands_evidence(request))


def _validated_update(body: dict[str, Any]) -> dict[str, Any]:
    if not body:
        raise invalid_body("expected a JSON object.")
    allowed: dict[str, tuple[str, ...] | None] = {
        "status": STATUSES,
        "classification": CLASSIFICATIONS,
        "determination": DETERMINATIONS,
        "assignedTo": None,
        "comment": None,
    }
    for key, value in body.items():
        if key not in allowed:
            raise invalid_body(
                f"'{key}' cannot be updated (status, assignedTo, classification, determination,"
                " comment)."
            )
        values = allowed[key]
        nullable = key in ("classification", "determination", "assignedTo")
        if value is None and nullable:
            continue
        if key == "determination" and value in RETIRED_DETERMINATIONS:
            raise invalid_body(
                f"the determination '{value}' is no longer supported ({', '.join(DETERMINATIONS)})."
            )
        if values is not None and value not in values:
            # PascalCase only: "resolved" (Graph's spelling) is refused here.
            raise invalid_body(f"'{value}' is not a valid {key} ({', '.join(values)}).")
        if values is None and (not isinstance(value, str) or not value.strip()):
            raise invalid_body(f"{key} must be a non-empty string.")
    return dict(body)


def _apply_update(alert: dict[str, Any], update: dict[str, Any], now: str) -> None:
    update = dict(update)
    comment = update.pop("comment", None)
    apply_change(alert, update, now, SPELLING, comment)


@router.patch("/alerts/{alert_id}", dependencies=[Depends(needs_role(ALERT_WRITE, forbidden))])
async def update_alert(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    body = await object_body(request)
    _apply_update(alert, _validated_update(body), state.graph_clock.next())
    return _entity(alert, with_evidence=False)


@router.post("/alerts/batchUpdate", dependencies=[Depends(needs_role(ALERT_WRITE, forbidden))])
async def batch_update_alerts(request: Request) -> Response:
    """``alertIds`` and the fields of a single update, for all of them; 200 with no body.
    All or nothing: an unknown id refuses the whole call, naming it (the documentation says
    nothing of unknown ids; refusing is the answer that loses nothing)."""
    state = get_state(request)
    body = await object_body(request)
    ids = body.pop("alertIds", None)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise invalid_body("alertIds must be a non-empty list of alert ids.")
    update = _validated_update(body)
    missing = [i for i in ids if i not in state.endpoint.alerts]
    if missing:
        raise Reject(
            mde_error(404, "ResourceNotFound", f"Alerts not found: {', '.join(missing[:20])}")
        )
    now = state.graph_clock.next()
    for alert_id in dict.fromkeys(ids):
        _apply_update(state.endpoint.alerts[alert_id], update, now)
    return Response(status_code=200)


def _correlate(state: SandboxState, alert: dict[str, Any]) -> None:
    # Defender correlates the alert into a Defender XDR incident, which Graph serves
    # (`/security/incidents`): a rule's `incident:` works for these alerts too. (Its
    # `$expand=alerts` lists the alerts loaded through Graph only.)
    ensure_incident(
        state,
        {
            "incidentId": alert.get("incidentId"),
            "title": alert.get("title"),
            "severity": _INCIDENT_SEVERITY.get(str(alert.get("severity")), "unknown"),
            "createdDateTime": alert["alertCreationTime"],
            "lastUpdateDateTime": alert["lastUpdateTime"],
            "tenantId": alert.get("aadTenantId"),
        },
    )


def load_alerts(state: SandboxState, payloads: list[dict[str, Any]]) -> list[str]:
    """Store alerts as given (ids kept), filling what the API would always have set."""
    return store_alerts(state, payloads, SPELLING, state.endpoint.alerts, _correlate)
