"""Microsoft Defender for Endpoint: ``/api/alerts`` (list, get, update), machines, machine actions
(isolate, release, poll) and indicators (submit or update, list)."""

from __future__ import annotations

import copy
import ipaddress
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.graph import ensure_incident
from riposte.sandbox.identity import ENDPOINT_AUDIENCES, check_bearer, needs_role
from riposte.sandbox.state import (
    MachineActionFailure,
    MachineActionProgress,
    Reject,
    SandboxState,
    get_state,
)
from riposte.sandbox.web import InvalidBody, json_body

MDE_ROOT = "https://api.security.microsoft.com/api"
MAX_TOP = 10_000
COMMENT_AUTHOR = "Automation"

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

# $filter properties (matched case-insensitively, as the API does) and their kinds.
DATETIME_FIELDS = ("alertCreationTime", "lastUpdateTime", "lastEventTime")
STRING_FIELDS = ("status", "severity", "category", "detectionSource", "assignedTo", "id")
NUMBER_FIELDS = ("incidentId", "investigationId")
_FIELDS = {name.lower(): name for name in (*DATETIME_FIELDS, *STRING_FIELDS, *NUMBER_FIELDS)}
_ENUMS: dict[str, tuple[str, ...]] = {"status": (*STATUSES, "Unknown"), "severity": SEVERITIES}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
_CLAUSE_RE = re.compile(
    r"^\s*(?P<field>[A-Za-z]+)\s+(?P<op>eq|ne|gt|ge|lt|le)\s+"
    r"(?P<value>'(?:[^']|'')*'|-?\d+|null|\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)\s*$"
)


def _mde_forbidden(message: str) -> JSONResponse:
    return mde_error(403, "Forbidden", message)


_ALERT_READ = ("Alert.Read.All", "Alert.ReadWrite.All")
_ALERT_WRITE = ("Alert.ReadWrite.All",)
_MACHINE_READ = ("Machine.Read.All", "Machine.ReadWrite.All")
_ISOLATE = ("Machine.Isolate",)
_INDICATORS = ("Ti.ReadWrite", "Ti.ReadWrite.All")


def mde_error(status: int, code: str, message: str) -> JSONResponse:
    """The Defender for Endpoint error body: ``code``, ``message`` and a request ``target``."""
    target = str(uuid.uuid4())
    return JSONResponse(
        {"error": {"code": code, "message": message, "target": target}},
        status_code=status,
        headers={"request-id": target},
    )


def _bad_request(message: str, code: str = "BadRequest") -> Reject:
    return Reject(mde_error(400, code, message))


async def require_endpoint_token(request: Request) -> None:
    check_bearer(request, ENDPOINT_AUDIENCES, lambda m: mde_error(401, "Unauthorized", m))


router = APIRouter(prefix="/mde/api", dependencies=[Depends(require_endpoint_token)])


@dataclass(frozen=True)
class _Clause:
    field: str
    operator: str
    value: int | str | None

    def matches(self, alert: dict[str, Any]) -> bool:
        actual = _comparable(self.field, alert.get(self.field))
        if actual is None or self.value is None:
            if self.operator in ("eq", "ne"):
                same = actual is None and self.value is None
                return same if self.operator == "eq" else not same
            return False
        return _COMPARE[self.operator](actual, self.value)


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
    clauses: list[_Clause] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _CLAUSE_RE.match(part)
        if match is None:
            raise _bad_request(f"Invalid filter clause: syntax error in '{part.strip()}'.")
        field = _FIELDS.get(match["field"].lower())
        if field is None:
            raise _bad_request(
                f"Invalid filter clause: the property '{match['field']}' is not supported in"
                " $filter (supported: " + ", ".join(sorted(_FIELDS.values())) + ")."
            )
        raw = match["value"]
        value: int | str | None
        if raw == "null":
            value = None
        elif field in DATETIME_FIELDS:
            value = parse_ticks(raw) if not raw.startswith("'") else None
            if value is None:
                raise _bad_request(
                    f"Invalid filter clause: '{raw}' is not a valid DateTimeOffset for {field}."
                )
        elif field in NUMBER_FIELDS:
            if raw.startswith("'"):
                raise _bad_request(f"Invalid filter clause: {field} is a number, not a string.")
            value = int(raw)
        else:
            if not raw.startswith("'"):
                raise _bad_request(f"Invalid filter clause: {field} values must be quoted.")
            value = raw[1:-1].replace("''", "'")
            allowed = _ENUMS.get(field)
            if allowed is not None and value not in allowed:
                raise _bad_request(
                    f"Invalid filter clause: '{value}' is not a valid {field}"
                    f" ({', '.join(allowed)})."
                )
        clauses.append(_Clause(field, match["op"], value))
    return clauses


def _int_option(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(f"Invalid value '{raw}' for query option {name}.") from None
    if value < 0:
        raise _bad_request(f"Invalid value '{raw}' for query option {name}: must be >= 0.")
    return value


def _expands_evidence(request: Request) -> bool:
    expand = request.query_params.get("$expand")
    if expand is None:
        return False
    if expand.strip().lower() != "evidence":
        raise _bad_request(f"Invalid $expand '{expand}': only 'evidence' can be expanded.")
    return True


def present(alert: dict[str, Any], with_evidence: bool) -> dict[str, Any]:
    """An alert as the API shows it: evidence only when the client asked for it."""
    shown = copy.deepcopy(alert)
    if not with_evidence:
        shown.pop("evidence", None)
    return shown


def _alert(state: SandboxState, alert_id: str) -> dict[str, Any]:
    alert = state.endpoint.alerts.get(alert_id)
    if alert is None:
        raise Reject(mde_error(404, "ResourceNotFound", f"Alert {alert_id} was not found."))
    return alert


def _newest_first(alert: dict[str, Any]) -> tuple[int, str]:
    ticks = _comparable("alertCreationTime", alert.get("alertCreationTime"))
    return (ticks if isinstance(ticks, int) else -1, str(alert.get("id")))


@router.get("/alerts", dependencies=[Depends(needs_role(_ALERT_READ, _mde_forbidden))])
async def list_alerts(request: Request) -> JSONResponse:
    state = get_state(request)
    params = request.query_params
    clauses = parse_filter(params["$filter"]) if "$filter" in params else []
    top = _int_option(request, "$top", MAX_TOP)
    if top > MAX_TOP:
        raise _bad_request(f"Invalid value '{top}' for $top: the maximum page size is {MAX_TOP}.")
    skip = _int_option(request, "$skip", 0)
    with_evidence = _expands_evidence(request)
    matching = [a for a in state.endpoint.alerts.values() if all(c.matches(a) for c in clauses)]
    # No $orderby on this API: the order is the service's (newest alert first), so a client
    # that wants "oldest update first" must sort what it read.
    matching.sort(key=_newest_first, reverse=True)
    return JSONResponse(
        {
            "@odata.context": f"{MDE_ROOT}/$metadata#Alerts",
            "value": [present(a, with_evidence) for a in matching[skip : skip + top]],
        }
    )


@router.get("/alerts/{alert_id}", dependencies=[Depends(needs_role(_ALERT_READ, _mde_forbidden))])
async def get_alert(alert_id: str, request: Request) -> JSONResponse:
    alert = _alert(get_state(request), alert_id)
    body = {"@odata.context": f"{MDE_ROOT}/$metadata#Alerts/$entity"}
    body.update(present(alert, _expands_evidence(request)))
    return JSONResponse(body)


def _validated_update(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not body:
        raise _bad_request(
            "Request body is incorrect: expected a JSON object.", "InvalidRequestBody"
        )
    allowed: dict[str, tuple[str, ...] | None] = {
        "status": STATUSES,
        "classification": CLASSIFICATIONS,
        "determination": DETERMINATIONS,
        "assignedTo": None,
        "comment": None,
    }
    for key, value in body.items():
        if key not in allowed:
            raise _bad_request(
                f"Request body is incorrect: '{key}' cannot be updated (status, assignedTo,"
                " classification, determination, comment).",
                "InvalidRequestBody",
            )
        values = allowed[key]
        nullable = key in ("classification", "determination", "assignedTo")
        if value is None and nullable:
            continue
        if key == "determination" and value in RETIRED_DETERMINATIONS:
            raise _bad_request(
                f"Request body is incorrect: the determination '{value}' is no longer supported"
                f" ({', '.join(DETERMINATIONS)}).",
                "InvalidRequestBody",
            )
        if values is not None and value not in values:
            # PascalCase only: "resolved" (Graph's spelling) is refused here.
            raise _bad_request(
                f"Request body is incorrect: '{value}' is not a valid {key} ({', '.join(values)}).",
                "InvalidRequestBody",
            )
        if values is None and (not isinstance(value, str) or not value.strip()):
            raise _bad_request(
                f"Request body is incorrect: {key} must be a non-empty string.",
                "InvalidRequestBody",
            )
    return dict(body)


def _apply_update(alert: dict[str, Any], update: dict[str, Any], now: str) -> None:
    update = dict(update)
    comment = update.pop("comment", None)
    if comment is not None:
        comments: list[dict[str, Any]] = alert.setdefault("comments", [])
        comments.append({"comment": comment, "createdBy": COMMENT_AUTHOR, "createdTime": now})
    if "status" in update and update["status"] != alert.get("status"):
        alert["resolvedTime"] = now if update["status"] == "Resolved" else None
    alert.update(update)
    alert["lastUpdateTime"] = now


@router.patch(
    "/alerts/{alert_id}", dependencies=[Depends(needs_role(_ALERT_WRITE, _mde_forbidden))]
)
async def update_alert(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise _bad_request(f"Request body is incorrect: {exc}.", "InvalidRequestBody") from None
    _apply_update(alert, _validated_update(body), state.graph_clock.next())
    body = {"@odata.context": f"{MDE_ROOT}/$metadata#Alerts/$entity"}
    body.update(present(alert, with_evidence=False))
    return JSONResponse(body)


@router.post(
    "/alerts/batchUpdate", dependencies=[Depends(needs_role(_ALERT_WRITE, _mde_forbidden))]
)
async def batch_update_alerts(request: Request) -> Response:
    """``alertIds`` and the fields of a single update, for all of them; 200 with no body.
    All or nothing: an unknown id refuses the whole call, naming it (the documentation says
    nothing of unknown ids; refusing is the answer that loses nothing)."""
    state = get_state(request)
    body = await _object_body(request)
    ids = body.pop("alertIds", None)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise _bad_request(
            "Request body is incorrect: alertIds must be a non-empty list of alert ids.",
            "InvalidRequestBody",
        )
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


# This API's severities -> a Graph incident's (which has no "unspecified").
_INCIDENT_SEVERITY = {
    "Informational": "informational",
    "Low": "low",
    "Medium": "medium",
    "High": "high",
}


def load_alerts(state: SandboxState, payloads: list[dict[str, Any]]) -> list[str]:
    """Store alerts as given (ids kept), filling what the API would always have set."""
    ids: list[str] = []
    for payload in payloads:
        alert = copy.deepcopy(payload)
        alert_id = str(alert.get("id") or f"da{uuid.uuid4().int % 10**18:018d}_{len(ids)}")
        alert["id"] = alert_id
        if not alert.get("alertCreationTime"):
            alert["alertCreationTime"] = state.graph_clock.next()
        if not alert.get("lastUpdateTime"):
            alert["lastUpdateTime"] = state.graph_clock.next()
        alert.setdefault("status", "New")
        alert.setdefault("comments", [])
        alert.setdefault("evidence", [])
        state.endpoint.alerts[alert_id] = alert
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
        ids.append(alert_id)
    return ids


# --- machines, machine actions (isolate, release) and indicators -----------------------------

ACTION_TYPES = ("Isolate", "Unisolate")
ISOLATION_TYPES = ("Full", "Selective", "UnManagedDevice")
ACTIVE_STATUSES = ("Pending", "InProgress")
FINAL_STATUSES = ("Succeeded", "Failed", "TimeOut", "Cancelled")
INDICATOR_TYPES = (
    "FileSha1",
    "FileMd5",
    "CertificateThumbprint",
    "FileSha256",
    "IpAddress",
    "DomainName",
    "Url",
)
INDICATOR_ACTIONS = (
    "Alert",
    "Warn",
    "Block",
    "Audit",
    "BlockAndRemediate",
    "AlertAndBlock",
    "Allowed",
)
INDICATOR_SEVERITIES = ("Informational", "Low", "Medium", "High")
_HEX_LENGTHS = {"FileSha1": 40, "FileSha256": 64, "FileMd5": 32, "CertificateThumbprint": 40}
_E_FAIL = -2147467259  # the HRESULT a failed action reports


def _field(body: dict[str, Any], name: str) -> Any:
    """A body property matched case-insensitively, as the service's JSON binding does."""
    if name in body:
        return body[name]
    folded = name.lower()
    return next((v for k, v in body.items() if isinstance(k, str) and k.lower() == folded), None)


async def _object_body(request: Request) -> dict[str, Any]:
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise _bad_request(f"Request body is incorrect: {exc}.", "InvalidRequestBody") from None
    if not isinstance(body, dict):
        raise _bad_request(
            "Request body is incorrect: expected a JSON object.", "InvalidRequestBody"
        )
    return body


def machine_record(
    machine_id: str,
    dns_name: str | None = None,
    *,
    os_platform: str | None = None,
    aad_device_id: str | None = None,
    rbac_group: str | None = None,
    seen: str | None = None,
) -> dict[str, Any]:
    """A Machine entity as ``GET /api/machines/{id}`` shows it."""
    return {
        "id": machine_id,
        "computerDnsName": dns_name,
        "firstSeen": seen,
        "lastSeen": seen,
        "osPlatform": os_platform or "Windows11",
        "version": None,
        "osProcessor": "x64",
        "lastIpAddress": None,
        "lastExternalIpAddress": None,
        "healthStatus": "Active",
        "onboardingStatus": "Onboarded",
        "rbacGroupName": rbac_group,
        "rbacGroupId": None,
        "riskScore": "Medium",
        "exposureLevel": "Medium",
        "aadDeviceId": aad_device_id,
        "machineTags": [],
    }


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def sync_machines(state: SandboxState) -> None:
    """Make every device the alerts name (MDE ``machineId``, Graph ``deviceEvidence`` with an
    ``mdeDeviceId``) a known machine; machines already known keep their state."""
    machines = state.endpoint.machines
    for alert in state.endpoint.alerts.values():
        machine_id = _text(alert.get("machineId"))
        if machine_id and machine_id.lower() not in machines:
            machines[machine_id.lower()] = machine_record(
                machine_id,
                _text(alert.get("computerDnsName")),
                rbac_group=_text(alert.get("rbacGroupName")),
                seen=alert.get("alertCreationTime"),
            )
    for alert in state.graph.alerts.values():
        evidence = alert.get("evidence")
        for item in evidence if isinstance(evidence, list) else ():
            if not isinstance(item, dict):
                continue
            kind = str(item.get("@odata.type", "")).lower()
            machine_id = _text(item.get("mdeDeviceId"))
            if not kind.endswith("deviceevidence") or not machine_id:
                continue
            if machine_id.lower() not in machines:
                machines[machine_id.lower()] = machine_record(
                    machine_id,
                    _text(item.get("deviceDnsName")),
                    os_platform=_text(item.get("osPlatform")),
                    aad_device_id=_text(item.get("azureAdDeviceId")),
                    seen=item.get("createdDateTime"),
                )


def _machine(state: SandboxState, machine_id: str) -> dict[str, Any]:
    sync_machines(state)
    machine = state.endpoint.machines.get(machine_id.strip().lower())
    if machine is None:
        raise Reject(mde_error(404, "ResourceNotFound", f"Machine {machine_id} was not found."))
    return machine


def _request_action(
    state: SandboxState, machine: dict[str, Any], action_type: str, comment: str, scope: Any
) -> dict[str, Any]:
    endpoint = state.endpoint
    for existing in endpoint.machine_actions.values():
        if (
            existing["machineId"] == machine["id"]
            and existing["type"] == action_type
            and existing["status"] in ACTIVE_STATUSES
        ):
            raise _bad_request("Action is already in progress", "ActiveRequestAlreadyExists")
    outcome = "Succeeded"
    for rule in endpoint.action_failures:
        if rule.applies_to(machine["id"], action_type):
            outcome = rule.status
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    endpoint.action_failures.remove(rule)
            break
    now = state.graph_clock.next()
    action: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": action_type,
        "title": None,
        "scope": scope,
        "requestor": state.config.client_id,
        "requestorComment": comment,
        "status": "Pending",
        "machineId": machine["id"],
        "computerDnsName": machine.get("computerDnsName"),
        "creationDateTimeUtc": now,
        "lastUpdateDateTimeUtc": now,
        "cancellationRequestor": None,
        "cancellationComment": None,
        "cancellationDateTimeUtc": None,
        "errorHResult": 0,
        "externalId": None,
        "requestSource": "PublicApi",
        "relatedFileInfo": None,
        "commands": [],
        "troubleshootInfo": None,
    }
    endpoint.machine_actions[action["id"]] = action
    endpoint.action_progress[action["id"]] = MachineActionProgress(outcome=outcome)
    return action


def _advance(state: SandboxState, action: dict[str, Any]) -> None:
    """One read of a running action: it is InProgress until its last poll, then final."""
    endpoint = state.endpoint
    progress = endpoint.action_progress.get(action["id"])
    if progress is None or action["status"] in FINAL_STATUSES:
        return
    progress.polls += 1
    done = progress.polls >= endpoint.polls_to_complete
    status = progress.outcome if done else "InProgress"
    if status == action["status"]:
        return
    now = state.graph_clock.next()
    action["status"] = status
    action["lastUpdateDateTimeUtc"] = now
    if status == "Succeeded":
        machine_id = action["machineId"].lower()
        if action["type"] == "Isolate":
            endpoint.isolated[machine_id] = action["scope"] or "Full"
        else:
            endpoint.isolated.pop(machine_id, None)
    elif status == "Cancelled":
        action["cancellationRequestor"] = "Automation"
        action["cancellationComment"] = "Cancelled by the sandbox"
        action["cancellationDateTimeUtc"] = now
    elif status in ("Failed", "TimeOut"):
        action["errorHResult"] = _E_FAIL


def _action_entity(action: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"@odata.context": f"{MDE_ROOT}/$metadata#MachineActions/$entity"}
    body.update(copy.deepcopy(action))
    return body


@router.get(
    "/machines/{machine_id}", dependencies=[Depends(needs_role(_MACHINE_READ, _mde_forbidden))]
)
async def get_machine(machine_id: str, request: Request) -> JSONResponse:
    body: dict[str, Any] = {"@odata.context": f"{MDE_ROOT}/$metadata#Machines/$entity"}
    body.update(copy.deepcopy(_machine(get_state(request), machine_id)))
    return JSONResponse(body)


def _comment(body: dict[str, Any]) -> str:
    comment = _field(body, "Comment")
    if not isinstance(comment, str) or not comment.strip():
        raise _bad_request("Request body is incorrect: Comment is required.", "InvalidRequestBody")
    return comment


@router.post(
    "/machines/{machine_id}/isolate", dependencies=[Depends(needs_role(_ISOLATE, _mde_forbidden))]
)
async def isolate_machine(machine_id: str, request: Request) -> JSONResponse:
    body = await _object_body(request)
    state = get_state(request)
    machine = _machine(state, machine_id)
    comment = _comment(body)
    isolation_type = _field(body, "IsolationType") or "Full"
    if isolation_type not in ISOLATION_TYPES:
        raise _bad_request(
            f"Request body is incorrect: '{isolation_type}' is not a valid IsolationType"
            f" ({', '.join(ISOLATION_TYPES)}).",
            "InvalidRequestBody",
        )
    action = _request_action(state, machine, "Isolate", comment, isolation_type)
    return JSONResponse(_action_entity(action), status_code=201)


@router.post(
    "/machines/{machine_id}/unisolate", dependencies=[Depends(needs_role(_ISOLATE, _mde_forbidden))]
)
async def release_machine(machine_id: str, request: Request) -> JSONResponse:
    body = await _object_body(request)
    state = get_state(request)
    machine = _machine(state, machine_id)
    action = _request_action(state, machine, "Unisolate", _comment(body), None)
    return JSONResponse(_action_entity(action), status_code=201)


@router.get(
    "/machineactions/{action_id}",
    dependencies=[Depends(needs_role(_MACHINE_READ, _mde_forbidden))],
)
async def get_machine_action(action_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    action = state.endpoint.machine_actions.get(action_id.strip().lower())
    if action is None:
        raise Reject(
            mde_error(404, "ResourceNotFound", f"Machine action {action_id} was not found.")
        )
    _advance(state, action)
    return JSONResponse(_action_entity(action))


_SIMPLE_CLAUSE_RE = re.compile(
    r"^\s*(?P<field>[A-Za-z]+)\s+(?P<op>eq|ne|gt|ge|lt|le)\s+"
    r"(?P<value>'(?:[^']|'')*'|true|false|\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)\s*$",
    re.IGNORECASE,
)
_Predicate = Callable[[dict[str, Any]], bool]


def _entity_filter(
    text: str,
    strings: tuple[str, ...],
    datetimes: tuple[str, ...] = (),
    booleans: tuple[str, ...] = (),
) -> list[_Predicate]:
    """A ``$filter`` of ``field op value`` clauses joined by ``and``, over an entity's string,
    datetime and boolean properties; anything else is the API's 400."""
    fields = {name.lower(): name for name in (*strings, *datetimes, *booleans)}
    predicates: list[_Predicate] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _SIMPLE_CLAUSE_RE.match(part)
        if match is None:
            raise _bad_request(f"Invalid filter clause: syntax error in '{part.strip()}'.")
        field = fields.get(match["field"].lower())
        if field is None:
            raise _bad_request(
                f"Invalid filter clause: the property '{match['field']}' is not supported in"
                " $filter (supported: " + ", ".join(sorted(fields.values())) + ")."
            )
        op, raw = match["op"].lower(), match["value"]
        if field in datetimes:
            wanted = parse_ticks(raw) if not raw.startswith("'") else None
            if wanted is None:
                raise _bad_request(
                    f"Invalid filter clause: '{raw}' is not a valid DateTimeOffset for {field}."
                )
            predicates.append(_compare_ticks(field, op, wanted))
            continue
        if op not in ("eq", "ne"):
            raise _bad_request(f"Invalid filter clause: '{op}' cannot compare {field}.")
        if field in booleans:
            if raw.lower() not in ("true", "false"):
                raise _bad_request(f"Invalid filter clause: {field} is true or false.")
            value: Any = raw.lower() == "true"
        elif not raw.startswith("'"):
            raise _bad_request(f"Invalid filter clause: {field} values must be quoted.")
        else:
            value = raw[1:-1].replace("''", "'")
        predicates.append(_compare_value(field, op, value))
    return predicates


def _compare_ticks(field: str, op: str, wanted: int) -> _Predicate:
    def check(entity: dict[str, Any]) -> bool:
        actual = parse_ticks(str(entity.get(field) or ""))
        return actual is not None and _COMPARE[op](actual, wanted)

    return check


def _compare_value(field: str, op: str, wanted: Any) -> _Predicate:
    def check(entity: dict[str, Any]) -> bool:
        return (entity.get(field) == wanted) == (op == "eq")

    return check


def _page(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    top = _int_option(request, "$top", MAX_TOP)
    if top > MAX_TOP:
        raise _bad_request(f"Invalid value '{top}' for $top: the maximum page size is {MAX_TOP}.")
    skip = _int_option(request, "$skip", 0)
    return [copy.deepcopy(item) for item in items[skip : skip + top]]


@router.get("/machineactions", dependencies=[Depends(needs_role(_MACHINE_READ, _mde_forbidden))])
async def list_machine_actions(request: Request) -> JSONResponse:
    state = get_state(request)
    text = request.query_params.get("$filter")
    predicates = (
        _entity_filter(
            text,
            ("id", "status", "machineId", "type", "requestor"),
            datetimes=("creationDateTimeUtc",),
        )
        if text
        else []
    )
    matching = [a for a in state.endpoint.machine_actions.values() if all(p(a) for p in predicates)]
    # Newest first, as the service lists them.
    matching.sort(key=lambda a: parse_ticks(a["creationDateTimeUtc"]) or 0, reverse=True)
    return JSONResponse(
        {
            "@odata.context": f"{MDE_ROOT}/$metadata#MachineActions",
            "value": _page(request, matching),
        }
    )


def _required_text(body: dict[str, Any], name: str) -> str:
    value = _field(body, name)
    if not isinstance(value, str) or not value.strip():
        raise _bad_request(f"Request body is incorrect: {name} is required.", "InvalidRequestBody")
    return value


def _one_of(body: dict[str, Any], name: str, allowed: tuple[str, ...], required: bool) -> Any:
    value = _field(body, name)
    if value is None and not required:
        return None
    if value not in allowed:
        raise _bad_request(
            f"Request body is incorrect: '{value}' is not a valid {name} ({', '.join(allowed)}).",
            "InvalidRequestBody",
        )
    return value


def _indicator_value(indicator_type: str, value: str) -> str:
    """The value checked against its type; the API refuses what cannot be that type."""
    stripped = value.strip()
    length = _HEX_LENGTHS.get(indicator_type)
    if length is not None and not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", stripped):
        problem = f"is not a valid {indicator_type} ({length} hexadecimal characters)"
    elif indicator_type == "IpAddress" and "/" in stripped:
        problem = "is a range: CIDR notation is not supported"
    elif indicator_type == "IpAddress" and not _is_ip(stripped):
        problem = "is not a valid IP address"
    elif indicator_type == "DomainName" and ("/" in stripped or " " in stripped):
        problem = "is not a valid domain name"
    elif indicator_type == "Url" and " " in stripped:
        problem = "is not a valid URL"
    else:
        return stripped
    raise _bad_request(f"Request body is incorrect: '{value}' {problem}.", "InvalidRequestBody")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validated_indicator(body: dict[str, Any]) -> dict[str, Any]:
    indicator_type = _one_of(body, "indicatorType", INDICATOR_TYPES, required=True)
    value = _indicator_value(indicator_type, _required_text(body, "indicatorValue"))
    action = _one_of(body, "action", INDICATOR_ACTIONS, required=True)
    generate_alert = _field(body, "generateAlert")
    if generate_alert is not None and not isinstance(generate_alert, bool):
        raise _bad_request(
            "Request body is incorrect: generateAlert must be true or false.", "InvalidRequestBody"
        )
    if action == "Audit" and generate_alert is not True:
        raise _bad_request(
            "Request body is incorrect: generateAlert must be true for an Audit indicator.",
            "InvalidRequestBody",
        )
    expiration = _field(body, "expirationTime")
    if expiration is not None and (
        not isinstance(expiration, str) or parse_ticks(expiration) is None
    ):
        raise _bad_request(
            f"Request body is incorrect: '{expiration}' is not a valid expirationTime.",
            "InvalidRequestBody",
        )
    groups = _field(body, "rbacGroupNames")
    if groups is not None and (
        not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
    ):
        raise _bad_request(
            "Request body is incorrect: rbacGroupNames must be a list of names.",
            "InvalidRequestBody",
        )
    return {
        "indicatorValue": value,
        "indicatorType": indicator_type,
        "action": action,
        "title": _required_text(body, "title"),
        "description": _required_text(body, "description"),
        "severity": _one_of(body, "severity", INDICATOR_SEVERITIES, required=False),
        "expirationTime": expiration,
        "recommendedActions": _field(body, "recommendedActions"),
        "rbacGroupNames": groups or [],
        "generateAlert": bool(generate_alert) if generate_alert is not None else None,
        "application": _field(body, "application"),
    }


@router.post("/indicators", dependencies=[Depends(needs_role(_INDICATORS, _mde_forbidden))])
async def submit_indicator(request: Request) -> JSONResponse:
    """Submit or update: an indicator of the same type and value is updated, not repeated."""
    body = await _object_body(request)
    state = get_state(request)
    fields = _validated_indicator(body)
    endpoint = state.endpoint
    now = state.graph_clock.next()
    app = state.config.client_id
    wanted = (fields["indicatorType"], fields["indicatorValue"].lower())
    indicator = next(
        (
            i
            for i in endpoint.indicators.values()
            if (i["indicatorType"], i["indicatorValue"].lower()) == wanted
        ),
        None,
    )
    if indicator is None:
        indicator = {
            "id": str(endpoint.next_indicator_id),
            "source": app,
            "sourceType": "AadApp",
            "createdBy": app,
            "createdBySource": "PublicApi",
            "createdByDisplayName": app,
            "creationTimeDateTimeUtc": now,
            **fields,
        }
        endpoint.next_indicator_id += 1
        endpoint.indicators[indicator["id"]] = indicator
    else:
        # `application` applies to new indicators only, as the API documents.
        fields.pop("application")
        indicator.update(fields)
    if indicator.get("generateAlert") is None:
        indicator["generateAlert"] = indicator["action"] in ("Alert", "AlertAndBlock", "Audit")
    indicator["lastUpdateTime"] = now
    indicator["lastUpdatedBy"] = app
    body = {"@odata.context": f"{MDE_ROOT}/$metadata#Indicators/$entity"}
    body.update(copy.deepcopy(indicator))
    return JSONResponse(body)


@router.get("/indicators", dependencies=[Depends(needs_role(_INDICATORS, _mde_forbidden))])
async def list_indicators(request: Request) -> JSONResponse:
    state = get_state(request)
    text = request.query_params.get("$filter")
    predicates = (
        _entity_filter(
            text,
            (
                "indicatorValue",
                "indicatorType",
                "action",
                "title",
                "severity",
                "application",
                "createdBy",
                "createdByDisplayName",
            ),
            datetimes=("expirationTime", "creationTimeDateTimeUtc"),
            booleans=("generateAlert",),
        )
        if text
        else []
    )
    matching = [i for i in state.endpoint.indicators.values() if all(p(i) for p in predicates)]
    return JSONResponse(
        {"@odata.context": f"{MDE_ROOT}/$metadata#Indicators", "value": _page(request, matching)}
    )


# --- control: machines, action outcomes, what was done (mounted under /_sandbox) -------------

control_router = APIRouter(prefix="/mde")


class MachineIn(BaseModel):
    """A machine the simulated tenant has onboarded (beyond those its alerts name)."""

    id: str = Field(min_length=1)
    computerDnsName: str | None = None  # noqa: N815 - the API's own spelling
    osPlatform: str | None = None  # noqa: N815
    aadDeviceId: str | None = None  # noqa: N815
    rbacGroupName: str | None = None  # noqa: N815


class MachineActionSettings(BaseModel):
    """Reads of ``GET /api/machineactions/{id}`` after which an action reaches its final status
    (the reads before show InProgress)."""

    polls_to_complete: int = Field(default=2, ge=1, le=1000)


class MachineActionFailureIn(BaseModel):
    """Make the next ``times`` matching actions (None: all, until cleared) end in ``status``."""

    status: Literal["Failed", "TimeOut", "Cancelled"] = "Failed"
    machine_id: str | None = None
    type: Literal["Isolate", "Unisolate"] | None = None
    times: int | None = Field(default=1, ge=1)


@control_router.get("/machines")
async def machines(request: Request) -> list[dict[str, Any]]:
    """Every known machine, with whether it is isolated now (``isolationType`` when it is)."""
    state = get_state(request)
    sync_machines(state)
    shown = []
    for key, machine in state.endpoint.machines.items():
        scope = state.endpoint.isolated.get(key)
        shown.append(
            {**copy.deepcopy(machine), "isolated": scope is not None, "isolationType": scope}
        )
    return shown


@control_router.post("/machines")
async def add_machines(items: MachineIn | list[MachineIn], request: Request) -> dict[str, Any]:
    state = get_state(request)
    ids = []
    for item in items if isinstance(items, list) else [items]:
        state.endpoint.machines[item.id.lower()] = machine_record(
            item.id,
            item.computerDnsName,
            os_platform=item.osPlatform,
            aad_device_id=item.aadDeviceId,
            rbac_group=item.rbacGroupName,
            seen=state.graph_clock.next(),
        )
        ids.append(item.id)
    return {"loaded": len(ids), "ids": ids}


@control_router.get("/machineactions")
async def machine_actions(request: Request) -> list[dict[str, Any]]:
    """Every machine action, oldest first, as it stands (reading them here advances nothing)."""
    return copy.deepcopy(list(get_state(request).endpoint.machine_actions.values()))


@control_router.get("/machineactions/settings")
async def machine_action_settings(request: Request) -> MachineActionSettings:
    return MachineActionSettings(polls_to_complete=get_state(request).endpoint.polls_to_complete)


@control_router.post("/machineactions/settings")
async def set_machine_action_settings(
    settings: MachineActionSettings, request: Request
) -> MachineActionSettings:
    get_state(request).endpoint.polls_to_complete = settings.polls_to_complete
    return settings


@control_router.post("/machineactions/failures")
async def add_machine_action_failure(
    failure: MachineActionFailureIn, request: Request
) -> dict[str, Any]:
    """The next matching isolation or release is accepted (201, Pending) and ends ``status``."""
    get_state(request).endpoint.action_failures.append(
        MachineActionFailure(
            status=failure.status,
            machine_id=failure.machine_id,
            action_type=failure.type,
            remaining=failure.times,
        )
    )
    return failure.model_dump()


@control_router.delete("/machineactions/failures")
async def clear_machine_action_failures(request: Request) -> dict[str, str]:
    get_state(request).endpoint.action_failures.clear()
    return {"status": "cleared"}


@control_router.get("/indicators")
async def indicators(request: Request) -> list[dict[str, Any]]:
    return copy.deepcopy(list(get_state(request).endpoint.indicators.values()))
