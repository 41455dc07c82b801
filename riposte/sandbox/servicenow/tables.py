"""The ServiceNow Table API routes: the incident table (create, query, get, update, delete) and
its journal (read-only), records shown as the API shows them; every other table is refused."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.servicenow.api import (
    JOURNAL_TABLE,
    TABLE,
    not_found,
    object_body,
    router,
    snow_error,
)
from riposte.sandbox.servicenow.incidents import BLANK_FIELDS, STATES, create_record, write
from riposte.sandbox.servicenow.query import select
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import base_url

DEFAULT_LIMIT = 10000
REFERENCE_TABLES = {
    "caller_id": "sys_user",
    "assigned_to": "sys_user",
    "opened_by": "sys_user",
    "resolved_by": "sys_user",
    "closed_by": "sys_user",
    "reopened_by": "sys_user",
    "assignment_group": "sys_user_group",
}
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


def _location(request: Request, sys_id: str) -> str:
    return f"{base_url(request)}/servicenow/api/now/table/{TABLE}/{sys_id}"


@router.post(f"/{TABLE}")
async def create_incident(request: Request) -> Response:
    state = get_state(request)
    body = await object_body(request)
    record = create_record(state, body, state.config.servicenow_user)
    headers = {"Location": _location(request, record["sys_id"])}
    if request.headers.get("x-no-response-body", "").lower() == "true":
        return Response(status_code=201, headers=headers)
    return JSONResponse({"result": _shown(request, record)}, status_code=201, headers=headers)


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
    matching = select(records, request.query_params.get("sysparm_query", ""), known)
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
        raise not_found()
    return record


@router.get(f"/{TABLE}/{{sys_id}}")
async def get_incident(sys_id: str, request: Request) -> JSONResponse:
    record = _record(get_state(request), sys_id)
    return JSONResponse({"result": _shown(request, record)})


@router.api_route(f"/{TABLE}/{{sys_id}}", methods=["PATCH", "PUT"])
async def update_incident(sys_id: str, request: Request) -> Response:
    state = get_state(request)
    record = _record(state, sys_id)
    body = await object_body(request)
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
    matching = select(records, request.query_params.get("sysparm_query", ""), known)
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
