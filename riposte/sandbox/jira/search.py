"""Jira search: ``/search/jql`` (GET and POST), paged by an opaque token and read from an index
that lags behind every write; the removed ``/search`` answers 410."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from riposte.sandbox.jira.api import bad, jira_error, object_body, router
from riposte.sandbox.jira.issues import field_list, indexed_fields, render
from riposte.sandbox.jira.jql import parse_jql
from riposte.sandbox.state import JiraIssue, get_state
from riposte.sandbox.web import base_url

DEFAULT_MAX_RESULTS = 50
MAX_RESULTS_IDS_ONLY = 5000
MAX_RESULTS_WITH_FIELDS = 100


@router.api_route("/search", methods=["GET", "POST"])
async def removed_search() -> JSONResponse:
    return jira_error(
        410,
        [
            "The requested API has been removed. Please migrate to the /rest/api/3/search/jql"
            " API. A full migration guideline is available at"
            " https://developer.atlassian.com/changelog/#CHANGE-2046"
        ],
    )


def _page_token(offset: int, jql: str) -> str:
    payload = {"o": offset, "q": hashlib.sha256(jql.encode()).hexdigest()[:16]}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _page_offset(token: str, jql: str) -> int:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if payload["q"] != hashlib.sha256(jql.encode()).hexdigest()[:16]:
            raise ValueError("token of another query")
        return int(payload["o"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad("The provided next page token is invalid or expired.") from None


def _sort_value(issue: JiraIssue, fields: dict[str, Any], field: str) -> tuple[str, int]:
    if field == "key":
        project, _, number = issue.key.partition("-")
        return project, int(number)
    return str(fields.get(field, "")), int(issue.id)


def _sorter(field: str) -> Callable[[tuple[JiraIssue, dict[str, Any]]], tuple[str, int]]:
    return lambda pair: _sort_value(pair[0], pair[1], field)


async def _search(
    request: Request,
    jql: str,
    fields: list[str] | None,
    max_results: Any,
    token: str | None,
    reconcile: list[str],
) -> JSONResponse:
    state = get_state(request)
    if not jql.strip():
        raise bad(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to"
            " your query."
        )
    query = parse_jql(state, jql)
    try:
        limit = DEFAULT_MAX_RESULTS if max_results is None else int(max_results)
    except (TypeError, ValueError):
        raise bad("The value of 'maxResults' must be an integer.") from None
    names = fields or []
    ids_only = all(n in ("id", "key") for n in names)
    limit = max(1, min(limit, MAX_RESULTS_IDS_ONLY if ids_only else MAX_RESULTS_WITH_FIELDS))
    offset = _page_offset(token, jql) if token else 0
    now = time.monotonic()
    # Search reads an index that lags behind every write (Jira documents it as eventually
    # consistent): an issue is matched and sorted on its fields as last indexed;
    # reconcileIssues reads the named ones as they are.
    seen: list[tuple[JiraIssue, dict[str, Any]]] = []
    for issue in state.jira.issues.values():
        indexed = issue.fields if issue.id in reconcile else indexed_fields(issue, now)
        if indexed is not None:
            seen.append((issue, indexed))
    matching = [(i, f) for i, f in seen if all(test(i, f) for test in query.conditions)]
    matching.sort(key=lambda pair: int(pair[0].id))
    for field, descending in reversed(query.order):
        matching.sort(key=_sorter(field), reverse=descending)
    page = [issue for issue, _ in matching[offset : offset + limit]]
    base = base_url(request)
    body: dict[str, Any] = {"issues": [render(base, state, i, names) for i in page]}
    more = offset + limit < len(matching)
    if more:
        # Absent, not null, on the last page (JRACLOUD-92184).
        body["nextPageToken"] = _page_token(offset + limit, jql)
    body["isLast"] = not more
    return JSONResponse(body)


@router.get("/search/jql")
async def search_get(request: Request) -> JSONResponse:
    params = request.query_params
    reconcile = [r.strip() for v in params.getlist("reconcileIssues") for r in v.split(",")]
    return await _search(
        request,
        params.get("jql", ""),
        field_list(request),
        params.get("maxResults"),
        params.get("nextPageToken"),
        reconcile,
    )


@router.post("/search/jql")
async def search_post(request: Request) -> JSONResponse:
    body = await object_body(request)
    fields = body.get("fields")
    if fields is not None and not (
        isinstance(fields, list) and all(isinstance(f, str) for f in fields)
    ):
        raise bad("'fields' must be a list of field names.")
    reconcile = body.get("reconcileIssues") or []
    jql = body.get("jql")
    return await _search(
        request,
        jql if isinstance(jql, str) else "",
        fields,
        body.get("maxResults"),
        body.get("nextPageToken"),
        [str(r) for r in reconcile] if isinstance(reconcile, list) else [],
    )
