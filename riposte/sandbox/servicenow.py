"""ServiceNow Table API for the incident table and its journal (read-only): string-typed records,
lax queries, the incident state model and the resolution data policy.

Incident states are the platform's (strings): 1 New, 2 In Progress, 3 On Hold, 6 Resolved,
7 Closed, 8 Canceled. Resolving or closing needs a resolution code and resolution notes (the data
policy answers 403 "Data Policy Exception" without them); resolved, closed and canceled incidents
are inactive; setting a resolved incident back to an open state reopens it: the resolution fields
are cleared and the reopen count, `reopened_by` and `reopened_time` are set. Closed and canceled
incidents are read-only to the itil role: the Table API drops the fields it may not write and
answers 200. Every write records `sys_updated_on` (UTC) and `sys_updated_by` (the user name of
whoever wrote); a write that changes nothing is no update at all, as with GlideRecord.
"""

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

from riposte.sandbox.clock import parse_servicenow_time, servicenow_time, utcnow
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import InvalidBody, base_url, basic_credentials, json_body, same

TABLE = "incident"
JOURNAL_TABLE = "sys_journal_field"
DEFAULT_LIMIT = 10000
JOURNAL_FIELDS = ("work_notes", "comments")
READ_ONLY = frozenset({"sys_id", "sys_created_on", "sys_created_by", "sys_mod_count"})
REFERENCE_TABLES = {
    "caller_id": "sys_user",
    "assigned_to": "sys_user",
    "opened_by": "sys_user",
    "resolved_by": "sys_user",
    "closed_by": "sys_user",
    "reopened_by": "sys_user",
    "assignment_group": "sys_user_group",
}
STATES = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
RESOLVED, CLOSED, CANCELED = "6", "7", "8"
INACTIVE_STATES = frozenset({RESOLVED, CLOSED, CANCELED})
READ_ONLY_STATES = frozenset({CLOSED, CANCELED})  # to the itil role
# The incident's Resolution code choices: those of current releases, then the older ones that
# instances upgraded from them still offer. The Table API stores any string in a choice field;
# the form (and so the analyst controls of the sandbox) offers only these.
CLOSE_CODES = (
    "Duplicate",
    "Known error",
    "No resolution provided",
    "Resolved by caller",
    "Resolved by change",
    "Resolved by problem",
    "Resolved by request",
    "Solution provided",
    "Workaround provided",
    "User error",
    "Solved (Work Around)",
    "Solved (Permanently)",
    "Solved Remotely (Work Around)",
    "Solved Remotely (Permanently)",
    "Not Solved (Not Reproducible)",
    "Not Solved (Too Costly)",
    "Closed/Resolved by Caller",
)
# The data policy on resolved and closed incidents, with the labels its message names.
MANDATORY_WHEN_RESOLVED = {"close_code": "Resolution code", "close_notes": "Resolution notes"}
DATE_FIELDS = frozenset(
    {
        "sys_created_on",
        "sys_updated_on",
        "opened_at",
        "resolved_at",
        "closed_at",
        "reopened_time",
    }
)
CHOICE_LABELS = {
    "state": STATES,
    "incident_state": STATES,
    "impact": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
    "urgency": {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"},
    "priority": {
        "1": "1 - Critical",
        "2": "2 - High",
        "3": "3 - Moderate",
        "4": "4 - Low",
        "5": "5 - Planning",
    },
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
    "reopened_by",
    "reopened_time",
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


def user_sys_id(state: SandboxState, user_name: str, name: str | None = None) -> str:
    """The sys_id of the sys_user whose user name is ``user_name``, made on first use."""
    users = state.servicenow.users
    for sys_id, user in users.items():
        if user["user_name"] == user_name:
            if name:
                user["name"] = name
            return sys_id
    sys_id = hashlib.sha256(f"sys_user|{user_name}".encode()).hexdigest()[:32]
    users[sys_id] = {"sys_id": sys_id, "user_name": user_name, "name": name or user_name}
    return sys_id


def _display(state: SandboxState, name: str, value: str) -> str:
    """The display value of a field, as `sysparm_display_value` shows it."""
    labels = CHOICE_LABELS.get(name)
    if labels is not None:
        return labels.get(value, value)
    if REFERENCE_TABLES.get(name) == "sys_user":
        user = state.servicenow.users.get(value)
        return user["name"] if user else ""
    return value


def _present(
    state: SandboxState,
    record: dict[str, str],
    base: str,
    fields: list[str] | None,
    exclude_links: bool,
    display: str = "false",
) -> dict[str, Any]:
    """A record as the Table API answers it: every value a string, reference fields as
    ``{"link", "value"}``, display values as ``sysparm_display_value`` asks (``true``, ``all``),
    and dot-walked user fields (``resolved_by.user_name``) when named in ``sysparm_fields``."""
    shown: dict[str, Any] = {}
    for name in fields or list(record):
        head, dot, tail = name.partition(".")
        if dot:
            if REFERENCE_TABLES.get(head) != "sys_user" or head not in record:
                continue
            user = state.servicenow.users.get(record[head]) or {}
            walked = user.get(tail, "")
            shown[name] = {"display_value": walked, "value": walked} if display == "all" else walked
            continue
        if name not in record:
            continue
        value = record[name]
        table = REFERENCE_TABLES.get(name)
        link = (
            f"{base}/servicenow/api/now/table/{table}/{value}"
            if table and value and not exclude_links
            else None
        )
        if display == "false":
            shown[name] = {"link": link, "value": value} if link else value
            continue
        text = _display(state, name, value)
        if display == "true":
            shown[name] = {"display_value": text, "link": link} if link else text
        else:
            shown[name] = {"display_value": text, "value": value}
            if link:
                shown[name]["link"] = link
    return shown


def _fields_param(request: Request) -> list[str] | None:
    raw = request.query_params.get("sysparm_fields")
    if not raw:
        return None
    return [f.strip() for f in raw.split(",") if f.strip()]


def _exclude_links(request: Request) -> bool:
    return request.query_params.get("sysparm_exclude_reference_link", "").lower() == "true"


def _display_param(request: Request) -> str:
    value = request.query_params.get("sysparm_display_value", "false").lower()
    return value if value in ("true", "all") else "false"


def _shown(request: Request, record: dict[str, str]) -> dict[str, Any]:
    return _present(
        get_state(request),
        record,
        base_url(request),
        _fields_param(request),
        _exclude_links(request),
        _display_param(request),
    )


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


def write(
    state: SandboxState,
    record: dict[str, str],
    body: dict[str, Any],
    user_name: str,
    *,
    creating: bool = False,
) -> bool:
    """Apply ``body`` to ``record`` as ``user_name`` would, with the incident's business rules and
    data policy; False when it changed nothing (then nothing is recorded, not even the update).

    Raises `Reject` (403, the data policy) before anything is changed.
    """
    now = servicenow_time(utcnow())
    before = dict(record)
    old_state = "" if creating else before.get("state", "")
    read_only = old_state in READ_ONLY_STATES
    updated = dict(record)
    notes: list[tuple[str, str]] = []
    for name, value in body.items():
        if name in READ_ONLY or name.startswith("sys_"):
            continue
        text = as_string(value)
        if name in JOURNAL_FIELDS:
            # Journal fields are write-only: the text goes to the activity stream, the field
            # itself always reads back empty.
            if text:
                notes.append((name, text))
            continue
        if read_only:
            continue  # a field the itil role may not write on a closed incident: dropped
        updated[name] = text
    updated["priority"] = PRIORITY.get((updated.get("impact", ""), updated.get("urgency", "")), "5")
    new_state = updated.get("state", "1")
    user = user_sys_id(state, user_name)
    if new_state != old_state:
        if new_state in (RESOLVED, CLOSED):
            if not updated.get("resolved_at"):
                updated["resolved_at"] = now
            if not updated.get("resolved_by"):
                updated["resolved_by"] = user
        if new_state == CLOSED:
            updated["closed_at"] = updated.get("closed_at") or now
            updated["closed_by"] = updated.get("closed_by") or user
        if old_state == RESOLVED and new_state not in INACTIVE_STATES:
            # Reopened: the resolution is gone, the reopen is counted and attributed.
            for name in ("close_code", "close_notes", "resolved_at", "resolved_by"):
                updated[name] = ""
            updated["reopen_count"] = str(int(updated.get("reopen_count") or 0) + 1)
            updated["reopened_by"] = user
            updated["reopened_time"] = now
    updated["incident_state"] = new_state
    updated["active"] = "false" if new_state in INACTIVE_STATES else "true"
    if new_state in (RESOLVED, CLOSED):
        missing = [
            label
            for name, label in MANDATORY_WHEN_RESOLVED.items()
            if not updated.get(name, "").strip()
        ]
        if missing:
            raise Reject(
                snow_error(
                    403,
                    "Operation Failed",
                    "Data Policy Exception: \n\tThe following fields are mandatory: "
                    + ", ".join(missing),
                )
            )
    if not creating and not notes and updated == before:
        return False
    record.clear()
    record.update(updated)
    journal = state.servicenow.journals.setdefault(record["sys_id"], [])
    for element, text in notes:
        journal.append(
            {"element": element, "value": text, "sys_created_on": now, "sys_created_by": user_name}
        )
    record["sys_updated_on"] = now
    record["sys_updated_by"] = user_name
    if not creating:
        record["sys_mod_count"] = str(int(record.get("sys_mod_count", "0") or 0) + 1)
    return True


def _location(request: Request, sys_id: str) -> str:
    return f"{base_url(request)}/servicenow/api/now/table/{TABLE}/{sys_id}"


def create_record(state: SandboxState, body: dict[str, Any], user_name: str) -> dict[str, str]:
    """A new incident from ``body``, as ``user_name`` creates it (`Reject` on the data policy)."""
    now = servicenow_time(utcnow())
    record: dict[str, str] = dict.fromkeys(BLANK_FIELDS, "")
    record.update(
        {
            "sys_id": uuid.uuid4().hex,
            "number": f"INC{state.servicenow.next_number:07d}",
            "state": "1",
            "incident_state": "1",
            "active": "true",
            "impact": "3",
            "urgency": "3",
            "priority": "5",
            "severity": "3",
            "category": "inquiry",
            "escalation": "0",
            "reopen_count": "0",
            "opened_at": now,
            "opened_by": user_sys_id(state, user_name),
            "sys_class_name": TABLE,
            "sys_created_on": now,
            "sys_created_by": user_name,
            "sys_mod_count": "0",
        }
    )
    write(state, record, body, user_name, creating=True)
    state.servicenow.next_number += 1
    state.servicenow.records[record["sys_id"]] = record
    return record


@router.post(f"/{TABLE}")
async def create_incident(request: Request) -> Response:
    state = get_state(request)
    body = await _object_body(request)
    record = create_record(state, body, state.config.servicenow_user)
    headers = {"Location": _location(request, record["sys_id"])}
    if request.headers.get("x-no-response-body", "").lower() == "true":
        return Response(status_code=201, headers=headers)
    return JSONResponse({"result": _shown(request, record)}, status_code=201, headers=headers)


@dataclass(frozen=True)
class _Condition:
    field: str
    test: Callable[[str], bool]


_TERM_RE = re.compile(
    r"^([a-z_][a-z0-9_.]*?)"
    r"(!=|>=|<=|=|>|<|LIKE|STARTSWITH|ENDSWITH|ISNOTEMPTY|ISEMPTY|IN)(.*)$"
)
_DATE_GENERATE_RE = re.compile(
    r"^javascript:\s*gs\.dateGenerate\(\s*'(\d{4}-\d{2}-\d{2})'\s*,\s*'([^']*)'\s*\)\s*$"
)


# `new GlideDateTime('YYYY-MM-DD HH:MM:SS')`: the string constructor reads UTC.
_GLIDE_DATE_TIME_RE = re.compile(
    r"^javascript:\s*new\s+GlideDateTime\(\s*'(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})'\s*\)\s*$"
)


def _date_value(value: str) -> str | None:
    """A date/time query value as the stored ``YYYY-MM-DD HH:MM:SS`` (UTC), or None when it is
    not one the sandbox evaluates (`gs.dateGenerate('date','time'|'start'|'end')`, a plain
    ``YYYY-MM-DD HH:MM:SS``, or a date)."""
    glide = _GLIDE_DATE_TIME_RE.match(value.strip())
    if glide:
        value = glide.group(1)
    match = _DATE_GENERATE_RE.match(value.strip())
    if match:
        day, time_part = match.groups()
        time_part = {"start": "00:00:00", "end": "23:59:59"}.get(time_part, time_part)
        value = f"{day} {time_part}"
    value = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += " 00:00:00"
    parsed = parse_servicenow_time(value)
    return servicenow_time(parsed) if parsed else None


def _ordered(operator: str, value: str, date: bool) -> Callable[[str], bool] | None:
    compare: dict[str, Callable[[Any, Any], bool]] = {
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }
    test = compare[operator]
    if date:
        bound = _date_value(value)
        if bound is None:
            return None
        return lambda v: bool(v) and test(v, bound)
    try:
        number = float(value)
    except ValueError:
        return lambda v: test(v, value)

    def numeric(v: str) -> bool:
        try:
            return test(float(v), number)
        except ValueError:
            return False

    return numeric


def _condition(field: str, operator: str, value: str) -> _Condition | None:
    """One query term; None when its value cannot be evaluated (the term is then dropped)."""
    date = field in DATE_FIELDS
    if operator in (">", ">=", "<", "<="):
        ordered = _ordered(operator, value, date)
        return _Condition(field, ordered) if ordered else None
    if date and operator in ("=", "!=") and value.startswith("javascript:"):
        normal = _date_value(value)
        if normal is None:
            return None
        value = normal
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
    parse, names a field the table does not have, or holds a value that cannot be evaluated is
    dropped, so it can match everything.
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
        if condition is None:
            continue
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
    page = [
        {k: v for k, v in _shown(request, r).items() if k.partition(".")[0] not in hidden}
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
    return JSONResponse({"result": _shown(request, record)})


@router.api_route(f"/{TABLE}/{{sys_id}}", methods=["PATCH", "PUT"])
async def update_incident(sys_id: str, request: Request) -> Response:
    state = get_state(request)
    record = _record(state, sys_id)
    body = await _object_body(request)
    write(state, record, body, state.config.servicenow_user)
    if request.headers.get("x-no-response-body", "").lower() == "true":
        return Response(status_code=200)
    return JSONResponse({"result": _shown(request, record)})


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
