"""Microsoft Defender for Endpoint ``/api/alerts``: list ($filter, $top, $skip), get, update."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.clock import parse_ticks
from riposte.sandbox.identity import ENDPOINT_AUDIENCES, check_bearer
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import InvalidBody, json_body

MDE_ROOT = "https://api.security.microsoft.com/api"
MAX_TOP = 10_000
COMMENT_AUTHOR = "Automation"

STATUSES = ("New", "InProgress", "Resolved")
CLASSIFICATIONS = ("TruePositive", "InformationalExpectedActivity", "FalsePositive")
# The current determinations, then the older ones the API still accepts.
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
    "NotAvailable",
    "Apt",
    "SecurityPersonnel",
)
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


@router.get("/alerts")
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


@router.get("/alerts/{alert_id}")
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


@router.patch("/alerts/{alert_id}")
async def update_alert(alert_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    alert = _alert(state, alert_id)
    try:
        body = await json_body(request)
    except InvalidBody as exc:
        raise _bad_request(f"Request body is incorrect: {exc}.", "InvalidRequestBody") from None
    update = _validated_update(body)
    now = state.graph_clock.next()
    comment = update.pop("comment", None)
    if comment is not None:
        comments: list[dict[str, Any]] = alert.setdefault("comments", [])
        comments.append({"comment": comment, "createdBy": COMMENT_AUTHOR, "createdTime": now})
    if "status" in update and update["status"] != alert.get("status"):
        alert["resolvedTime"] = now if update["status"] == "Resolved" else None
    alert.update(update)
    alert["lastUpdateTime"] = now
    body = {"@odata.context": f"{MDE_ROOT}/$metadata#Alerts/$entity"}
    body.update(present(alert, with_evidence=False))
    return JSONResponse(body)


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
        ids.append(alert_id)
    return ids
