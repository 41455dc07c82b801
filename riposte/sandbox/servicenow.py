"""ServiceNow Table API for the incident table and its journal (read-only): string-typed records,
lax queries."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.clock import servicenow_time, utcnow
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import InvalidBody, base_url, basic_credentials, json_body, same

TABLE = "incident"
JOURNAL_TABLE = "sys_journal_field"
DEFAULT_LIMIT = 10000
INTEGRATION_USER = "integration"  # sys_created_by: never the configured user name
JOURNAL_FIELDS = ("work_notes", "comments")
READ_ONLY = frozenset({"sys_id", "sys_created_on", "sys_created_by", "sys_mod_count"})
REFERENCE_TABLES = {
    "caller_id": "sys_user",
    "assigned_to": "sys_user",
    "opened_by": "sys_user",
    "resolved_by": "sys_user",
    "closed_by": "sys_user",
    "assignment_group": "sys_user_group",
}
# Priority is derived from impact and urgency by ServiceNow's data lookup, whatever is sent.
PRIORITY = {
    ("1", "1"): "1",
    ("1", "2"): "2",
    ("2", "1"): "2",
    ("1", "3"): "3",
    ("2", "2"): "3",
    ("3", "1"): "3",
    ("2", "3"): "4",
    ("3", "2"): "4",
    ("3", "3"): "5",
}
BLANK_FIELDS = (
    "short_description",
    "description",
    "correlation_id",
    "correlation_display",
    "subcategory",
    "caller_id",
    "assigned_to",
    "assignment_group",
    "opened_by",
    "contact_type",
    "close_code",
    "close_notes",
    "resolved_at",
    "resolved_by",
    "closed_at",
    "closed_by",
    "work_notes",
    "comments",
)


def snow_error(status: int, message: str, detail: str | None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "detail": detail}, "status": "failure"}, status_code=status
    )


def _not_found() -> Reject:
    return Reject(
        snow_error(
            404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
        )
    )


async def require_basic(request: Request) -> None:
    config = get_state(request).config
    credentials = basic_credentials(request)
    if (
        credentials is None
        or not same(credentials[0], config.servicenow_user)
        or not same(credentials[1], config.servicenow_password)
    ):
        raise Reject(
            snow_error(401, "User Not Authenticated", "Required to provide Auth information")
        )


router = APIRouter(prefix="/servicenow/api/now/table", dependencies=[Depends(require_basic)])


def as_string(value: Any) -> str:
    """How ServiceNow stores whatever JSON value it is given: as a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "value" in value:
        return as_string(value["value"])
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _present(
    record: dict[str, str], base: str, fields: list[str] | None, exclude_links: bool
) -> dict[str, Any]:
    names = [f for f in fields if f in record] if fields else list(record)
    shown: dict[str, Any] = {}
    for name in names:
        value = record[name]
        table = REFERENCE_TABLES.get(name)
        if table and value and not exclude_links:
            shown[name] = {
                "link": f"{base}/servicenow/api/now/table/{table}/{value}",
                "value": value,
            }
        else:
            shown[name] = value
    return shown


def _fields_param(request: Request) -> list[str] | None:
    raw = request.query_params.get("sysparm_fields")
    if not raw:
        return None
    return [f.strip() for f in raw.split(",") if f.strip()]


def _exclude_links(request: Request) -> bool:
    return request.query_params.get("sysparm_exclude_reference_link", "").lower() == "true"


async def _object_body(request: Request) -> dict[str, Any]:
    try:
        body = await json_body(request)
    except InvalidBody:
        raise Reject(
            snow_error(400, "Exception while reading request", "The payload is not valid JSON.")
        ) from None
    if not isinstance(body, dict):
        raise Reject(
            snow_error(400, "Exception while reading request", "The payload must be an object.")
        )
    return body


def _apply(state: SandboxState, record: dict[str, str], body: dict[str, Any]) -> None:
    now = servicenow_time(utcnow())
    journal = state.servicenow.journals.setdefault(record["sys_id"], [])
    for name, value in body.items():
        if name in READ_ONLY or name.startswith("sys_"):
            continue
        text = as_string(value)
        if name in JOURNAL_FIELDS:
            # Journal fields are write-only: the text goes to the activity stream, the field
            # itself always reads back empty.
            if text:
                journal.append(
                    {
                        "element": name,
                        "value": text,
                        "sys_created_on": now,
                        "sys_created_by": INTEGRATION_USER,
                    }
                )
            record[name] = ""
            continue
        record[name] = text
    record["priority"] = PRIORITY.get((record.get("impact", ""), record.get("urgency", "")), "5")
    record["incident_state"] = record.get("state", "1")
    state_value = record.get("state", "")
    if state_value == "6" and not record.get("resolved_at"):
        record["resolved_at"] = now
    if state_value in ("7", "8"):
        record["active"] = "false"
        if not record.get("closed_at"):
            record["closed_at"] = now
    record["sys_updated_on"] = now
    record["sys_updated_by"] = INTEGRATION_USER


def _location(request: Request, sys_id: str) -> str:
    return f"{base_url(request)}/servicenow/api/now/table/{TABLE}/{sys_id}"


@router.post(f"/{TABLE}")
async def create_incident(request: Request) -> Response:
    state = get_state(request)
    body = await _object_body(request)
    sys_id = uuid.uuid4().hex
    now = servicenow_time(utcnow())
    number = f"INC{state.servicenow.next_number:07d}"
    state.servicenow.next_number += 1
    record: dict[str, str] = dict.fromkeys(BLANK_FIELDS, "")
    record.update(
        {
            "sys_id": sys_id,
            "number": number,
            "state": "1",
            "incident_state": "1",
            "active": "true",
            "impact": "3",
            "urgency": "3",
            "priority": "5",
            "severity": "3",
            "category": "inquiry",
            "escalation": "0",
            "opened_at": now,
            "sys_class_name": TABLE,
            "sys_created_on": now,
            "sys_created_by": INTEGRATION_USER,
            "sys_mod_count": "0",
        }
    )
    state.servicenow.records[sys_id] = record
    _apply(state, record, body)
    headers = {"Location": _location(request, sys_id)}
    if request.headers.get("x-no-response-body", "").lower() == "true":
        return Response(status_code=201, headers=headers)
    shown = _present(record, base_url(request), _fields_param(request), _exclude_links(request))
    return JSONResponse({"result": shown}, status_code=201, headers=headers)


@dataclass(frozen=True)
class _Condition:
    field: str
    test: Callable[[str], bool]


_TERM_RE = re.compile(
    r"^([a-z_][a-z0-9_.]*?)(!=|=|LIKE|STARTSWITH|ENDSWITH|ISNOTEMPTY|ISEMPTY|IN)(.*)$"
)


def _condition(field: str, operator: str, value: str) -> _Condition:
    tests: dict[str, Callable[[str], bool]] = {
        "=": lambda v: v == value,
        "!=": lambda v: v != value,
        "LIKE": lambda v: value.lower() in v.lower(),
        "STARTSWITH": lambda v: v.lower().startswith(value.lower()),
        "ENDSWITH": lambda v: v.lower().endswith(value.lower()),
        "ISEMPTY": lambda v: v == "",
        "ISNOTEMPTY": lambda v: v != "",
        "IN": lambda v: v in value.split(","),
    }
    return _Condition(field, tests[operator])


def parse_query(
    query: str, known_fields: set[str]
) -> tuple[list[list[_Condition]], list[tuple[str, bool]]]:
    """AND-ed groups of OR-ed conditions, and the ordering.

    Like ServiceNow (without ``glide.invalid_query.returns_no_rows``), a term that does not
    parse or names a field the table does not have is dropped, so it can match everything.
    """
    groups: list[list[_Condition]] = []
    order: list[tuple[str, bool]] = []
    for raw_term in query.split("^"):
        term = raw_term.strip()
        if term.startswith("ORDERBYDESC"):
            if term[11:] in known_fields:
                order.append((term[11:], True))
            continue
        if term.startswith("ORDERBY"):
            if term[7:] in known_fields:
                order.append((term[7:], False))
            continue
        alternative = term.startswith("OR") and bool(groups)
        match = _TERM_RE.match(term[2:] if alternative else term)
        if match is None or match.group(1) not in known_fields:
            continue
        condition = _condition(*match.groups())
        if alternative:
            groups[-1].append(condition)
        else:
            groups.append([condition])
    return groups, order


def _link_header(request: Request, offset: int, limit: int, total: int) -> str:
    def page(at: int) -> str:
        return str(request.url.include_query_params(sysparm_offset=at, sysparm_limit=limit))

    links = [f'<{page(0)}>;rel="first"']
    if offset > 0:
        links.append(f'<{page(max(0, offset - limit))}>;rel="prev"')
    if offset + limit < total:
        links.append(f'<{page(offset + limit)}>;rel="next"')
    last = ((total - 1) // limit) * limit if total and limit else 0
    links.append(f'<{page(last)}>;rel="last"')
    return ",".join(links)


def _by(field: str) -> Callable[[dict[str, str]], str]:
    return lambda record: record.get(field, "")


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return value if value >= 0 else default


@router.get(f"/{TABLE}")
async def query_incidents(request: Request) -> JSONResponse:
    state = get_state(request)
    records = list(state.servicenow.records.values())
    hidden = set(state.config.servicenow_unreadable_fields)
    known = set(BLANK_FIELDS).union(*(r.keys() for r in records)) - hidden
    groups, order = parse_query(request.query_params.get("sysparm_query", ""), known)
    matching = [
        r for r in records if all(any(c.test(r.get(c.field, "")) for c in g) for g in groups)
    ]
    for field, descending in reversed(order):  # stable sorts, last key first
        matching.sort(key=_by(field), reverse=descending)
    limit = _int_param(request, "sysparm_limit", DEFAULT_LIMIT)
    offset = _int_param(request, "sysparm_offset", 0)
    base = base_url(request)
    fields, exclude = _fields_param(request), _exclude_links(request)
    page = [
        {k: v for k, v in _present(r, base, fields, exclude).items() if k not in hidden}
        for r in matching[offset : offset + limit]
    ]
    headers = {"X-Total-Count": str(len(matching))}
    if limit:
        headers["Link"] = _link_header(request, offset, limit, len(matching))
    return JSONResponse({"result": page}, headers=headers)


def _record(state: SandboxState, sys_id: str) -> dict[str, str]:
    record = state.servicenow.records.get(sys_id)
    if record is None:
        raise _not_found()
    return record


@router.get(f"/{TABLE}/{{sys_id}}")
async def get_incident(sys_id: str, request: Request) -> JSONResponse:
    record = _record(get_state(request), sys_id)
    shown = _present(record, base_url(request), _fields_param(request), _exclude_links(request))
    return JSONResponse({"result": shown})


@router.api_route(f"/{TABLE}/{{sys_id}}", methods=["PATCH", "PUT"])
async def update_incident(sys_id: str, request: Request) -> Response:
    state = get_state(request)
    record = _record(state, sys_id)
    body = await _object_body(request)
    _apply(state, record, body)
    record["sys_mod_count"] = str(int(record.get("sys_mod_count", "0") or 0) + 1)
    if request.headers.get("x-no-response-body", "").lower() == "true":
        return Response(status_code=200)
    shown = _present(record, base_url(request), _fields_param(request), _exclude_links(request))
    return JSONResponse({"result": shown})


@router.delete(f"/{TABLE}/{{sys_id}}")
async def delete_incident(sys_id: str, request: Request) -> Response:
    state = get_state(request)
    _record(state, sys_id)
    del state.servicenow.records[sys_id]
    state.servicenow.journals.pop(sys_id, None)
    return Response(status_code=204)


def _journal_records(state: SandboxState) -> list[dict[str, str]]:
    """Every journal entry as a `sys_journal_field` record (the table the activity stream reads)."""
    records = []
    for element_id, entries in state.servicenow.journals.items():
        for index, entry in enumerate(entries):
            records.append(
                {
                    "sys_id": hashlib.sha256(f"{element_id}|{index}".encode()).hexdigest()[:32],
                    "element_id": element_id,
                    "name": TABLE,
                    **entry,
                }
            )
    return records


@router.get(f"/{JOURNAL_TABLE}")
async def query_journal(request: Request) -> JSONResponse:
    """Journal entries (work notes, comments), queried like any table; read-only, as the
    integration user's ACL allows."""
    if not get_state(request).config.servicenow_journal_readable:
        raise Reject(
            snow_error(
                403,
                "User Not Authorized",
                "Operation against file 'sys_journal_field' is not allowed by ACL",
            )
        )
    records = _journal_records(get_state(request))
    known = {"sys_id", "element_id", "name", "element", "value", "sys_created_on", "sys_created_by"}
    groups, order = parse_query(request.query_params.get("sysparm_query", ""), known)
    matching = [
        r for r in records if all(any(c.test(r.get(c.field, "")) for c in g) for g in groups)
    ]
    for field, descending in reversed(order):
        matching.sort(key=_by(field), reverse=descending)
    limit = _int_param(request, "sysparm_limit", DEFAULT_LIMIT)
    offset = _int_param(request, "sysparm_offset", 0)
    fields = _fields_param(request)
    page = [
        {k: v for k, v in r.items() if not fields or k in fields}
        for r in matching[offset : offset + limit]
    ]
    return JSONResponse({"result": page}, headers={"X-Total-Count": str(len(matching))})


@router.api_route("/{table}", methods=["GET", "POST"])
@router.api_route("/{table}/{sys_id}", methods=["GET", "PATCH", "PUT", "DELETE"])
async def other_table(table: str) -> JSONResponse:
    return snow_error(400, f"Invalid table {table}", None)


def inspect(state: SandboxState) -> list[dict[str, Any]]:
    return [
        {"record": dict(record), "journal": list(state.servicenow.journals.get(sys_id, []))}
        for sys_id, record in state.servicenow.records.items()
    ]
