"""Jira issues: projects and their create screens, create and get (fields as the API renders
them), comments, the changelog; the search index each write feeds; what the sandbox shows of
the issues (``/_sandbox/jira/issues``)."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from riposte.sandbox.jira.api import (
    API,
    DATE_FIELDS,
    adf_problem,
    api_account_id,
    bad,
    jira_error,
    local_time,
    named,
    now_utc,
    object_body,
    router,
    user_details,
)
from riposte.sandbox.jira.workflows import resolution_view, status_view, workflow_of
from riposte.sandbox.state import JiraIssue, Reject, SandboxState, get_state
from riposte.sandbox.web import base_url

MAX_CHANGELOG_RESULTS = 100
MAX_COMMENT_RESULTS = 5000
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
NOT_ON_SCREEN = "Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
SETTABLE_FIELDS = frozenset(
    {
        "project",
        "summary",
        "issuetype",
        "labels",
        "priority",
        "description",
        "environment",
        "assignee",
        "reporter",
        "duedate",
        "components",
    }
)
ALL_FIELDS = (
    "summary",
    "status",
    "labels",
    "priority",
    "issuetype",
    "project",
    "description",
    "created",
    "updated",
    "resolution",
    "resolutiondate",
    "creator",
    "reporter",
    "comment",
)


def _validate_create(state: SandboxState, fields: dict[str, Any]) -> dict[str, str]:
    config = state.config
    errors: dict[str, str] = {}
    project = fields.get("project")
    key = project.get("key") if isinstance(project, dict) else None
    if not isinstance(key, str) or key.upper() not in {p.upper() for p in config.jira_projects}:
        errors["project"] = "valid project is required"
    summary = fields.get("summary")
    if summary is None or (isinstance(summary, str) and not summary.strip()):
        errors["summary"] = "You must specify a summary of the issue."
    elif not isinstance(summary, str):
        errors["summary"] = "Operation value must be a string"
    elif len(summary) > 255:
        errors["summary"] = "Summary must be less than 255 characters."
    issuetype = fields.get("issuetype")
    if issuetype is None:
        errors["issuetype"] = "Specify an issue type"
    elif named(issuetype, _issue_types(state)) is None:
        errors["issuetype"] = "Specify a valid issue type"
    labels = fields.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        errors["labels"] = "Labels must be a list of strings."
    else:
        for label in labels:
            if not label or re.search(r"\s", label):
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
                break
            if len(label) > 255:
                errors["labels"] = "The label exceeds the 255 character limit."
                break
    if "priority" in fields and named(fields["priority"], PRIORITIES) is None:
        errors["priority"] = "The priority selected is invalid."
    for rich in ("description", "environment"):
        if fields.get(rich) is not None and (problem := adf_problem(fields[rich])):
            errors[rich] = problem
    missing = set(config.jira_screen_missing_fields)
    for name in fields:
        if name in missing or (name not in SETTABLE_FIELDS and not name.startswith("customfield_")):
            errors[name] = NOT_ON_SCREEN.format(name=name)
    return errors


def _issue_types(state: SandboxState) -> dict[str, str]:
    return {name: str(10001 + i) for i, name in enumerate(state.config.jira_issue_types)}


def _project_or_404(state: SandboxState, key: str) -> str:
    found = next((p for p in state.config.jira_projects if p.upper() == key.upper()), None)
    if found is None:
        raise Reject(
            jira_error(
                404,
                [f"No project could be found with key '{key}'."],
            )
        )
    return found.upper()


@router.get("/project/{key}")
async def get_project(key: str, request: Request) -> JSONResponse:
    state = get_state(request)
    project = _project_or_404(state, key)
    base = base_url(request)
    return JSONResponse(
        {
            "self": f"{base}{API}/project/{project}",
            "id": str(10000 + [p.upper() for p in state.config.jira_projects].index(project)),
            "key": project,
            "name": project,
            "issueTypes": [
                {"id": type_id, "name": name, "subtask": name == "Subtask"}
                for name, type_id in _issue_types(state).items()
            ],
        }
    )


@router.get("/issue/createmeta/{key}/issuetypes")
async def createmeta_issue_types(key: str, request: Request) -> JSONResponse:
    """The issue types a project's create screen offers (paged, as Jira Cloud's)."""
    state = get_state(request)
    _project_or_404(state, key)
    values = [
        {"id": type_id, "name": name, "subtask": name == "Subtask"}
        for name, type_id in _issue_types(state).items()
    ]
    return JSONResponse(
        {
            "startAt": 0,
            "maxResults": 50,
            "total": len(values),
            "issueTypes": values,
            "values": values,
        }  # fmt: skip
    )


@router.get("/issue/createmeta/{key}/issuetypes/{type_id}")
async def createmeta_fields(key: str, type_id: str, request: Request) -> JSONResponse:
    """The fields on the project's create screen for one issue type."""
    state = get_state(request)
    _project_or_404(state, key)
    if type_id not in _issue_types(state).values():
        raise Reject(jira_error(404, ["The issue type selected is invalid."]))
    missing = set(state.config.jira_screen_missing_fields)
    required = {"project", "summary", "issuetype"}
    values = [
        {"fieldId": name, "key": name, "name": name.capitalize(), "required": name in required}
        for name in sorted(SETTABLE_FIELDS)
        if name not in missing
    ]
    return JSONResponse(
        {
            "startAt": 0,
            "maxResults": 50,
            "total": len(values),
            "fields": values,
            "values": values,
        }  # fmt: skip
    )


@router.post("/issue")
async def create_issue(request: Request) -> JSONResponse:
    state = get_state(request)
    body = await object_body(request)
    fields = body.get("fields")
    if not isinstance(fields, dict):
        raise bad("Request body must contain 'fields'.")
    errors = _validate_create(state, fields)
    if errors:
        raise Reject(jira_error(400, [], errors))
    jira = state.jira
    project = str(fields["project"]["key"]).upper()
    issue_id = str(jira.next_issue_id)
    jira.next_issue_id += 1
    key = f"{project}-{jira.next_number[project]}"
    jira.next_number[project] += 1
    now = now_utc()
    issue_type = named(fields["issuetype"], _issue_types(state))
    stored = {
        name: copy.deepcopy(value)
        for name, value in fields.items()
        if name not in ("project", "issuetype", "priority")
    }
    stored.update(
        {
            "project": project,
            "issuetype": issue_type,
            "priority": named(fields.get("priority", {"name": "Medium"}), PRIORITIES),
            "labels": list(fields.get("labels", [])),
            "description": fields.get("description"),
            "status": workflow_of(issue_type).initial,
            "created": now,
            "updated": now,
            "resolution": None,
            "resolutiondate": None,
            "creator": api_account_id(),
        }
    )
    stored.setdefault("reporter", api_account_id())
    issue = JiraIssue(
        id=issue_id,
        key=key,
        fields=stored,
        indexed_at=time.monotonic() + jira.search_lag_seconds,
    )
    jira.issues[issue_id] = issue
    reindex(state, issue)
    return JSONResponse(
        {"id": issue_id, "key": key, "self": f"{base_url(request)}{API}/issue/{issue_id}"},
        status_code=201,
    )


def reindex(state: SandboxState, issue: JiraIssue) -> None:
    """Queue the issue's fields as they are now for search, visible after the index lag."""
    now = time.monotonic()
    visible = [i for i, (at, _) in enumerate(issue.index) if at <= now]
    if visible:
        del issue.index[: visible[-1]]  # only the newest visible version still matters
    at = max(now + state.jira.search_lag_seconds, issue.indexed_at)
    issue.index.append((at, copy.deepcopy(issue.fields)))


def indexed_fields(issue: JiraIssue, now: float) -> dict[str, Any] | None:
    """The fields search sees now, or None while the issue is not indexed yet."""
    for at, fields in reversed(issue.index):
        if at <= now:
            return fields
    return None


def comment_view(
    base: str, state: SandboxState, issue: JiraIssue, comment: dict[str, Any]
) -> dict[str, Any]:
    shown: dict[str, Any] = {"self": f"{base}{API}/issue/{issue.id}/comment/{comment['id']}"}
    shown.update(copy.deepcopy(comment))
    for who in ("author", "updateAuthor"):
        shown[who] = user_details(base, state, comment[who])
    for when in ("created", "updated"):
        shown[when] = local_time(state, comment[when])
    return shown


def _history(base: str, state: SandboxState, history: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": history["id"],
        "author": user_details(base, state, history["author"]),
        "created": local_time(state, history["created"]),
        "items": copy.deepcopy(history["items"]),
    }


def _field(base: str, state: SandboxState, issue: JiraIssue, name: str) -> Any:
    value = issue.fields.get(name)
    if name == "status":
        return status_view(base, str(value))
    if name == "resolution":
        return resolution_view(base, value) if value else None
    if name in DATE_FIELDS:
        return local_time(state, value)
    if name in ("creator", "reporter", "assignee") and isinstance(value, str):
        return user_details(base, state, value)
    if name == "priority" and value is not None:
        return {
            "self": f"{base}{API}/priority/{PRIORITIES[value]}",
            "name": value,
            "id": PRIORITIES[value],
        }
    if name == "issuetype" and value is not None:
        return {"self": f"{base}{API}/issuetype/{value}", "name": value, "subtask": False}
    if name == "project":
        return {"self": f"{base}{API}/project/{value}", "key": value, "name": value}
    if name == "comment":
        comments = [comment_view(base, state, issue, c) for c in issue.comments]
        return {
            "comments": comments,
            "self": f"{base}{API}/issue/{issue.id}/comment",
            "maxResults": len(comments),
            "total": len(comments),
            "startAt": 0,
        }
    return copy.deepcopy(value)


def render(
    base: str,
    state: SandboxState,
    issue: JiraIssue,
    names: list[str],
    expand: tuple[str, ...] = (),
) -> dict[str, Any]:
    if "*all" in names or "*navigable" in names:
        names = list(dict.fromkeys([*ALL_FIELDS, *issue.fields]))
    wanted = [n for n in names if n not in ("id", "key") and not n.startswith("-")]
    fields = {
        name: _field(base, state, issue, name)
        for name in wanted
        if name in issue.fields or name in ("comment", "status")
    }
    shown: dict[str, Any] = {
        "id": issue.id,
        "key": issue.key,
        "self": f"{base}{API}/issue/{issue.id}",
        "fields": fields,
    }
    if "changelog" in expand:
        histories = [_history(base, state, h) for h in issue.changelog[:MAX_CHANGELOG_RESULTS]]
        shown["changelog"] = {
            "startAt": 0,
            "maxResults": len(histories),
            "total": len(issue.changelog),
            "histories": histories,
        }
    return shown


def find_issue(state: SandboxState, key_or_id: str) -> JiraIssue:
    issue = state.jira.find(key_or_id)
    if issue is None:
        raise Reject(
            jira_error(404, ["Issue does not exist or you do not have permission to see it."])
        )
    return issue


def field_list(request: Request) -> list[str] | None:
    values = request.query_params.getlist("fields")
    if not values:
        return None
    return [f.strip() for v in values for f in v.split(",") if f.strip()]


def expand_param(request: Request) -> tuple[str, ...]:
    values = request.query_params.getlist("expand")
    return tuple(e.strip() for v in values for e in v.split(",") if e.strip())


@router.get("/issue/{key}")
async def get_issue(key: str, request: Request) -> JSONResponse:
    state = get_state(request)
    issue = find_issue(state, key)
    names = field_list(request) or ["*all"]
    return JSONResponse(render(base_url(request), state, issue, names, expand_param(request)))


@router.post("/issue/{key}/comment")
async def add_comment(key: str, request: Request) -> JSONResponse:
    state = get_state(request)
    issue = find_issue(state, key)
    body = await object_body(request)
    if "body" not in body:
        raise Reject(jira_error(400, [], {"comment": "Comment body can not be empty!"}))
    if problem := adf_problem(body["body"]):
        raise Reject(jira_error(400, [], {"comment": problem}))
    comment = append_comment(state, issue, body["body"], api_account_id())
    return JSONResponse(comment_view(base_url(request), state, issue, comment), status_code=201)


def append_comment(
    state: SandboxState, issue: JiraIssue, adf: Any, account_id: str
) -> dict[str, Any]:
    """A comment by ``account_id``; it updates the issue (not its changelog)."""
    now = now_utc()
    comment = {
        "id": str(state.jira.next_comment_id),
        "author": account_id,
        "body": copy.deepcopy(adf),
        "updateAuthor": account_id,
        "created": now,
        "updated": now,
        "jsdPublic": True,
    }
    state.jira.next_comment_id += 1
    issue.comments.append(comment)
    issue.fields["updated"] = now
    reindex(state, issue)
    return comment


def _page_params(request: Request, default: int, most: int) -> tuple[int, int]:
    try:
        start = int(request.query_params.get("startAt", 0))
        limit = int(request.query_params.get("maxResults", default))
    except ValueError:
        raise bad("'startAt' and 'maxResults' must be integers.") from None
    return max(0, start), max(1, min(limit, most))


@router.get("/issue/{key}/comment")
async def list_comments(key: str, request: Request) -> JSONResponse:
    """Comments paged by startAt/maxResults, oldest first (`orderBy=-created`: newest first)."""
    state = get_state(request)
    issue = find_issue(state, key)
    order = request.query_params.get("orderBy", "created")
    if order not in ("created", "+created", "-created"):
        raise bad(f"The value '{order}' is not valid for the parameter 'orderBy'.")
    start, limit = _page_params(request, MAX_COMMENT_RESULTS, MAX_COMMENT_RESULTS)
    ordered = list(reversed(issue.comments)) if order == "-created" else list(issue.comments)
    page = [
        comment_view(base_url(request), state, issue, c) for c in ordered[start : start + limit]
    ]
    return JSONResponse(
        {"startAt": start, "maxResults": limit, "total": len(ordered), "comments": page}
    )


@router.get("/issue/{key}/changelog")
async def list_changelog(key: str, request: Request) -> JSONResponse:
    """The issue's changelog, oldest first, paged by startAt/maxResults (at most 100)."""
    state = get_state(request)
    issue = find_issue(state, key)
    start, limit = _page_params(request, MAX_CHANGELOG_RESULTS, MAX_CHANGELOG_RESULTS)
    base = base_url(request)
    total = len(issue.changelog)
    last = start + limit >= total
    here = f"{base}{API}/issue/{issue.key}/changelog"
    body: dict[str, Any] = {
        "self": f"{here}?maxResults={limit}&startAt={start}",
        "maxResults": limit,
        "startAt": start,
        "total": total,
        "isLast": last,
        "values": [_history(base, state, h) for h in issue.changelog[start : start + limit]],
    }
    if not last:
        body["nextPage"] = f"{here}?maxResults={limit}&startAt={start + limit}"
    return JSONResponse(body)


def inspect(state: SandboxState) -> list[dict[str, Any]]:
    return [
        {
            "id": issue.id,
            "key": issue.key,
            "fields": copy.deepcopy(issue.fields),
            "comments": copy.deepcopy(issue.comments),
            "changelog": copy.deepcopy(issue.changelog),
        }
        for issue in state.jira.issues.values()
    ]
