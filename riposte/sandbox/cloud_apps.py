"""Microsoft Defender for Cloud Apps ``/api/v1/alerts/``: list, fetch, read, close_*, throttle."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.identity import CLOUD_APPS_AUDIENCES, check_bearer, needs_role
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import json_object, same

MAX_LIMIT = 100
HANDLER = "Automation"

# close_* endpoint -> (resolutionStatusValue it sets, reasonId values it accepts; None: none).
CLOSE_KINDS: dict[str, tuple[int, frozenset[int] | None]] = {
    "close_benign": (4, frozenset({2, 4, 5, 6})),
    "close_false_positive": (3, frozenset({0, 1, 3, 4})),
    "close_true_positive": (5, None),
}
SORT_FIELDS = {"date": "timestamp", "severity": "severityValue"}


def _mdca_forbidden(message: str) -> JSONResponse:
    return mdca_error(403, message)


_READ = ("Investigation.read", "Investigation.manage")
_MANAGE = ("Investigation.manage",)


def mdca_error(status: int, detail: str) -> JSONResponse:
    """The service's plain error body (Django REST framework style)."""
    return JSONResponse({"detail": detail}, status_code=status)


def invalid_value(field: str, value: Any) -> Reject:
    """The captured form-validation error: 400 with a per-field list and ``"error": true``."""
    return Reject(
        JSONResponse(
            {
                field: [
                    {
                        "error": f"{value} is not valid",
                        "errorMessageCode": "CONSOLE_FORMS_NOT_VALID_VALUE",
                        "errorMessageArgs": [str(value)],
                    }
                ],
                "error": True,
            },
            status_code=400,
        )
    )


async def require_cloud_apps_auth(request: Request) -> None:
    """A legacy ``Token <api token>`` or an Entra bearer for MDCA; then the tenant's throttle."""
    state = get_state(request)
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "token":
        if not same(credential.strip(), state.config.cloud_apps_legacy_token):
            raise Reject(mdca_error(401, "Invalid token."))
    elif scheme.lower() == "bearer":
        check_bearer(request, CLOUD_APPS_AUDIENCES, lambda m: mdca_error(401, m))
    else:
        raise Reject(mdca_error(401, "Authentication credentials were not provided."))
    _admit(state)


def _admit(state: SandboxState) -> None:
    throttle = state.cloud_apps.throttle
    if not throttle.enabled:
        return
    now = time.monotonic()
    recent = state.cloud_apps.recent
    while recent and recent[0] <= now - throttle.window_seconds:
        recent.popleft()
    if len(recent) >= throttle.requests:
        # The documented limit comes with no Retry-After: clients must back off on their own.
        raise Reject(mdca_error(429, "Request was throttled."))
    recent.append(now)


router = APIRouter(prefix="/mdca/api/v1/alerts", dependencies=[Depends(require_cloud_apps_auth)])


def _ints(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise invalid_value("filters", value)
    return list(items)


def _ms(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_value("filters", value)
    return value


def _resolved_ms(alert: dict[str, Any]) -> int | None:
    raw = alert.get("resolveTime")
    if not isinstance(raw, str):
        return None
    try:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


Predicate = Callable[[dict[str, Any]], bool]
Reader = Callable[[dict[str, Any]], Any]


def _between(read: Reader, low: int | None, high: int | None) -> Predicate:
    def test(alert: dict[str, Any]) -> bool:
        value = read(alert)
        if not isinstance(value, int):
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    return test


def _time_predicate(ops: dict[str, Any], read: Reader) -> list[Predicate]:
    tests: list[Predicate] = []
    for op, value in ops.items():
        if op == "gte":
            tests.append(_between(read, _ms(value), None))
        elif op == "lte":
            tests.append(_between(read, None, _ms(value)))
        elif op == "range":
            if not isinstance(value, dict):
                raise invalid_value("filters", value)
            tests.append(_between(read, _ms(value.get("start")), _ms(value.get("end"))))
        elif op == "gte_ndays":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise invalid_value("filters", value)
            since = datetime.now(UTC) - timedelta(days=value)
            tests.append(_between(read, int(since.timestamp() * 1000), None))
        else:
            raise invalid_value("filters", op)
    return tests


def _member(read: Reader, wanted: list[Any], inside: bool) -> Predicate:
    def test(alert: dict[str, Any]) -> bool:
        return (read(alert) in wanted) is inside

    return test


def _membership(
    ops: dict[str, Any], read: Reader, parse: Callable[[Any], list[Any]]
) -> list[Predicate]:
    tests: list[Predicate] = []
    for op, value in ops.items():
        if op not in ("eq", "neq"):
            raise invalid_value("filters", op)
        tests.append(_member(read, parse(value), inside=op == "eq"))
    return tests


def _flag(ops: dict[str, Any], read: Reader) -> list[Predicate]:
    value = ops.get("eq")
    if set(ops) != {"eq"} or not isinstance(value, bool):
        raise invalid_value("filters", ops)
    return [_member(read, [value], inside=True)]


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) for i in items):
        raise invalid_value("filters", value)
    return list(items)


def compile_filters(filters: Any) -> Predicate:
    """The AND of the given filters; an unknown filter or operator is the form error."""
    if filters is None:
        return lambda alert: True
    if not isinstance(filters, dict):
        raise invalid_value("filters", filters)
    tests: list[Predicate] = []
    for name, ops in filters.items():
        if not isinstance(ops, dict) or not ops:
            raise invalid_value("filters", name)
        if name == "date":
            tests += _time_predicate(ops, lambda a: a.get("timestamp"))
        elif name == "resolutionDate":
            tests += _time_predicate(ops, _resolved_ms)
        elif name == "id":
            tests += _membership(ops, lambda a: a.get("_id"), _strings)
        elif name == "severity":
            tests += _membership(ops, lambda a: a.get("severityValue"), _ints)
        elif name == "resolutionStatus":
            tests += _membership(ops, lambda a: a.get("resolutionStatusValue"), _ints)
        elif name == "alertOpen":
            tests += _flag(ops, lambda a: a.get("resolutionStatusValue", 0) == 0)
        elif name == "read":
            tests += _flag(ops, lambda a: a.get("statusValue", 0) != 0)
        else:
            raise invalid_value("filters", name)
    return lambda alert: all(test(alert) for test in tests)


def _page_option(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_value(name, value)
    return value


def _listing(state: SandboxState, body: dict[str, Any]) -> JSONResponse:
    matches = compile_filters(body.get("filters"))
    skip = _page_option("skip", body.get("skip"), 0)
    # At most 100 per response, whatever was asked.
    limit = min(_page_option("limit", body.get("limit"), MAX_LIMIT), MAX_LIMIT)
    sort_field = body.get("sortField", "date")
    if sort_field not in SORT_FIELDS:
        raise invalid_value("sortField", sort_field)
    direction = body.get("sortDirection", "desc")
    if direction not in ("asc", "desc"):
        raise invalid_value("sortDirection", direction)
    key = SORT_FIELDS[sort_field]
    found = [a for a in state.cloud_apps.alerts.values() if matches(a)]
    found.sort(key=lambda a: (a.get(key) or 0, str(a.get("_id"))), reverse=direction == "desc")
    page = found[skip : skip + limit]
    return JSONResponse(
        {
            "data": copy.deepcopy(page),
            "hasNext": skip + limit < len(found),
            "max": limit,
            "total": len(found),
            "moreThanTotal": False,
        }
    )


@router.get("/", dependencies=[Depends(needs_role(_READ, _mdca_forbidden))])
async def list_alerts_get(request: Request) -> JSONResponse:
    params = request.query_params
    return _listing(get_state(request), {k: params[k] for k in ("skip", "limit") if k in params})


async def _body(request: Request, *, required: bool) -> dict[str, Any]:
    if not (await request.body()).strip() and not required:
        return {}
    return await json_object(
        request,
        lambda message: Reject(mdca_error(400, message)),
        "JSON parse error - body is not valid JSON.",
        "Invalid data. Expected a dictionary.",
    )


@router.post("/", dependencies=[Depends(needs_role(_READ, _mdca_forbidden))])
async def list_alerts_post(request: Request) -> JSONResponse:
    return _listing(get_state(request), await _body(request, required=False))


def close_alert(alert: dict[str, Any], resolution: int, comment: str | None, handler: str) -> None:
    """Close one alert as ``resolution`` (resolutionStatusValue), by ``handler``: the API's
    own account for a close_* request, a person's UPN for a close in the portal."""
    now = datetime.now(UTC)
    alert["resolutionStatusValue"] = resolution
    alert["statusValue"] = max(1, int(alert.get("statusValue") or 0))
    alert["resolveTime"] = f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"
    alert["handledByUser"] = handler
    if comment:
        alert["comment"] = comment


def _close(kind: str, state: SandboxState, body: dict[str, Any]) -> JSONResponse:
    resolution, reasons = CLOSE_KINDS[kind]
    filters = body.get("filters")
    if not isinstance(filters, dict) or not filters:
        # A close without filters would close every alert of the tenant: the API refuses it.
        raise invalid_value("filters", filters)
    matches = compile_filters(filters)
    reason = body.get("reasonId")
    if reasons is not None and reason is not None and reason not in reasons:
        raise invalid_value("reasonId", reason)
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise invalid_value("comment", comment)
    closed = 0
    for alert in state.cloud_apps.alerts.values():
        if matches(alert):
            close_alert(alert, resolution, comment, HANDLER)
            closed += 1
    answer: dict[str, Any] = {"closed_" + kind.removeprefix("close_"): closed}
    asked = filters.get("id", {}).get("eq") if isinstance(filters.get("id"), dict) else None
    if asked is not None:
        missing = [i for i in _strings(asked) if i not in state.cloud_apps.alerts]
        if missing:
            # Unknown ids are not an error: a 200 that says so, with a count of what matched.
            answer["alertsNotFound"] = missing
    return JSONResponse(answer)


@router.post("/close_benign/", dependencies=[Depends(needs_role(_MANAGE, _mdca_forbidden))])
async def close_benign(request: Request) -> JSONResponse:
    return _close("close_benign", get_state(request), await _body(request, required=True))


@router.post("/close_false_positive/", dependencies=[Depends(needs_role(_MANAGE, _mdca_forbidden))])
async def close_false_positive(request: Request) -> JSONResponse:
    return _close("close_false_positive", get_state(request), await _body(request, required=True))


@router.post("/close_true_positive/", dependencies=[Depends(needs_role(_MANAGE, _mdca_forbidden))])
async def close_true_positive(request: Request) -> JSONResponse:
    return _close("close_true_positive", get_state(request), await _body(request, required=True))


def _alert(state: SandboxState, pk: str) -> dict[str, Any]:
    alert = state.cloud_apps.alerts.get(pk)
    if alert is None:
        raise Reject(mdca_error(404, "Not found."))
    return alert


@router.get("/{pk}/", dependencies=[Depends(needs_role(_READ, _mdca_forbidden))])
async def fetch_alert(pk: str, request: Request) -> JSONResponse:
    return JSONResponse(copy.deepcopy(_alert(get_state(request), pk)))


@router.post("/{pk}/read/", dependencies=[Depends(needs_role(_READ, _mdca_forbidden))])
async def mark_read(pk: str, request: Request) -> JSONResponse:
    alert = _alert(get_state(request), pk)
    alert["statusValue"] = max(1, int(alert.get("statusValue") or 0))
    return JSONResponse({})


@router.post("/{pk}/unread/", dependencies=[Depends(needs_role(_READ, _mdca_forbidden))])
async def mark_unread(pk: str, request: Request) -> JSONResponse:
    alert = _alert(get_state(request), pk)
    alert["statusValue"] = 0
    return JSONResponse({})


def load_alerts(state: SandboxState, payloads: list[dict[str, Any]]) -> list[str]:
    """Store alerts as given (``_id`` kept), filling what the service would always have set."""
    ids: list[str] = []
    for payload in payloads:
        alert = copy.deepcopy(payload)
        alert_id = str(alert.get("_id") or secrets.token_hex(12))
        alert["_id"] = alert_id
        if not isinstance(alert.get("idValue"), int):
            state.cloud_apps.next_id_value += 1
            alert["idValue"] = state.cloud_apps.next_id_value
        if not isinstance(alert.get("timestamp"), int):
            alert["timestamp"] = int(time.time() * 1000)
        alert.setdefault("statusValue", 0)
        alert.setdefault("resolutionStatusValue", 0)
        alert.setdefault("severityValue", 1)
        alert.setdefault("entities", [])
        state.cloud_apps.alerts[alert_id] = alert
        ids.append(alert_id)
    return ids
