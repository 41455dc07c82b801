"""Jira Cloud REST API v3: issues with ADF bodies, JQL search paged by token, comments, workflows
and their transitions, the changelog.

Each issue type follows a workflow, whose transition ids are its own (a client reads them from
`GET /issue/{key}/transitions`): Incident the classic one (Open, In Progress, Resolved, Reopened,
Closed; Start Progress 4, Stop Progress 301, Resolve Issue 5, Close Issue 2 and 701, Reopen
Issue 3), every other type a simplified one (To Do, In Progress, Done; global transitions 11,
21, 31). Transitions to a Done-category status carry a screen with the Resolution field (the
workflow sets Done when none is given); leaving the Done category clears the resolution. Every
change of status or resolution is a changelog history with its author. JQL reads date literals
(minute precision) in the account's time zone, and timestamps are written with its offset.
Search reads an index that lags behind every write, not only creations.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.clock import jira_time, parse_jira_time, utcnow
from riposte.sandbox.state import JiraIssue, Reject, SandboxState, get_state
from riposte.sandbox.web import InvalidBody, base_url, basic_credentials, json_body, same

API = "/jira/rest/api/3"
DEFAULT_MAX_RESULTS = 50
MAX_RESULTS_IDS_ONLY = 5000
MAX_RESULTS_WITH_FIELDS = 100
NOT_ADF = "Operation value must be an Atlassian Document"
AUTHOR = {
    "accountId": "557058:00000000-0000-4000-8000-sandboxbot000",
    "displayName": "Riposte Automation",
    "active": True,
    "accountType": "atlassian",
}
MAX_CHANGELOG_RESULTS = 100
MAX_COMMENT_RESULTS = 5000
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
# name -> (id, category id, category key, colour)
STATUSES = {
    "To Do": ("10000", 2, "new", "blue-gray"),
    "Open": ("1", 2, "new", "blue-gray"),
    "Reopened": ("4", 2, "new", "blue-gray"),
    "In Progress": ("3", 4, "indeterminate", "yellow"),
    "Done": ("10001", 3, "done", "green"),
    "Resolved": ("5", 3, "done", "green"),
    "Closed": ("6", 3, "done", "green"),
}
# A Jira Cloud site's default resolutions.
RESOLUTIONS = {
    "Done": "10000",
    "Won't Do": "10001",
    "Duplicate": "10002",
    "Cannot Reproduce": "10003",
}
DEFAULT_RESOLUTION = "Done"
NOT_ON_SCREEN = "Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."


@dataclass(frozen=True)
class Transition:
    id: str
    name: str
    to: str
    sources: tuple[str, ...] | None = None  # None: global, from every status but its target
    screen: tuple[str, ...] = ()  # the fields of its screen


@dataclass(frozen=True)
class Workflow:
    initial: str
    transitions: tuple[Transition, ...]


_WORKING = ("Open", "In Progress", "Reopened")
WORKFLOWS = {
    "simplified": Workflow(
        "To Do",
        (
            Transition("11", "To Do", "To Do"),
            Transition("21", "In Progress", "In Progress"),
            Transition("31", "Done", "Done", screen=("resolution",)),
        ),
    ),
    "classic": Workflow(
        "Open",
        (
            Transition("4", "Start Progress", "In Progress", ("Open", "Reopened")),
            Transition("301", "Stop Progress", "Open", ("In Progress",)),
            Transition("5", "Resolve Issue", "Resolved", _WORKING, ("resolution",)),
            Transition("2", "Close Issue", "Closed", _WORKING, ("resolution",)),
            Transition("701", "Close Issue", "Closed", ("Resolved",)),
            Transition("3", "Reopen Issue", "Reopened", ("Resolved", "Closed")),
        ),
    ),
}
WORKFLOW_OF_TYPE = {"Incident": "classic"}  # every other issue type: simplified
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
DATE_FIELDS = frozenset({"created", "updated", "resolutiondate"})


def jira_error(
    status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errorMessages": messages or [], "errors": errors or {}}, status_code=status
    )


def _bad(message: str) -> Reject:
    return Reject(jira_error(400, [message]))


async def require_basic(request: Request) -> None:
    config = get_state(request).config
    credentials = basic_credentials(request)
    if (
        credentials is None
        or not same(credentials[0], config.jira_email)
        or not same(credentials[1], config.jira_api_token)
    ):
        raise Reject(
            jira_error(
                401,
                ["You are not authenticated. Authentication required to perform this operation."],
            )
        )


router = APIRouter(prefix=API, dependencies=[Depends(require_basic)])


# --- accounts and time ------------------------------------------------------------------------


def api_account_id() -> str:
    return str(AUTHOR["accountId"])


def analyst_account(state: SandboxState, display_name: str) -> str:
    """The accountId of a person of the site (made on first use), for the analyst controls."""
    account_id = f"557058:{uuid.uuid5(uuid.NAMESPACE_URL, f'jira-sandbox/{display_name}')}"
    state.jira.users.setdefault(
        account_id,
        {
            "accountId": account_id,
            "displayName": display_name,
            "active": True,
            "accountType": "atlassian",
        },
    )
    return account_id


def _user(base: str, state: SandboxState, account_id: str) -> dict[str, Any]:
    known = AUTHOR if account_id == api_account_id() else state.jira.users.get(account_id)
    details = dict(known or {"accountId": account_id, "displayName": account_id, "active": True})
    details["self"] = f"{base}{API}/user?accountId={account_id}"
    details["timeZone"] = state.jira.time_zone
    return details


def _now() -> str:
    """Now, as stored (UTC); `_local` writes it in the account's time zone."""
    return jira_time(utcnow())


def _local(state: SandboxState, stored: Any) -> Any:
    moment = parse_jira_time(stored) if isinstance(stored, str) else None
    return jira_time(moment, state.jira.time_zone) if moment else stored


def adf_problem(value: Any) -> str | None:
    """Why ``value`` is not an Atlassian Document Format document, or None if it is one."""
    if not (
        isinstance(value, dict)
        and value.get("type") == "doc"
        and value.get("version") == 1
        and isinstance(value.get("content"), list)
    ):
        return NOT_ADF
    return None if all(_valid_node(n) for n in value["content"]) else "INVALID_INPUT"


def _valid_node(node: Any) -> bool:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str) or not node["type"]:
        return False
    if node["type"] == "text" and not (isinstance(node.get("text"), str) and node["text"]):
        return False
    marks = node.get("marks")
    if marks is not None and not (
        isinstance(marks, list) and all(isinstance(m, dict) and "type" in m for m in marks)
    ):
        return False
    content = node.get("content")
    if content is None:
        return True
    return isinstance(content, list) and all(_valid_node(n) for n in content)


async def _object_body(request: Request) -> dict[str, Any]:
    try:
        body = await json_body(request)
    except InvalidBody:
        raise _bad("Unexpected character in the request body: it is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    return body


def _named(value: Any, names: dict[str, str]) -> str | None:
    """The canonical name of a ``{"name": ..}`` or ``{"id": ..}`` reference, if it is one."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("name"), str):
        wanted = value["name"].lower()
        return next((n for n in names if n.lower() == wanted), None)
    if value.get("id") is not None:
        return next((n for n, i in names.items() if i == str(value["id"])), None)
    return None


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
    elif _named(issuetype, _issue_types(state)) is None:
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
    if "priority" in fields and _named(fields["priority"], PRIORITIES) is None:
        errors["priority"] = "The priority selected is invalid."
    for rich in ("description", "environment"):
        if fields.get(rich) is not None and (problem := adf_problem(fields[rich])):
            errors[rich] = problem
    missing = set(config.jira_screen_missing_fields)
    for name in fields:
        if name in missing or (name not in SETTABLE_FIELDS and not name.startswith("customfield_")):
            errors[name] = (
                f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
            )
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
    body = await _object_body(request)
    fields = body.get("fields")
    if not isinstance(fields, dict):
        raise _bad("Request body must contain 'fields'.")
    errors = _validate_create(state, fields)
    if errors:
        raise Reject(jira_error(400, [], errors))
    jira = state.jira
    project = str(fields["project"]["key"]).upper()
    issue_id = str(jira.next_issue_id)
    jira.next_issue_id += 1
    key = f"{project}-{jira.next_number[project]}"
    jira.next_number[project] += 1
    now = _now()
    issue_type = _named(fields["issuetype"], _issue_types(state))
    stored = {
        name: copy.deepcopy(value)
        for name, value in fields.items()
        if name not in ("project", "issuetype", "priority")
    }
    stored.update(
        {
            "project": project,
            "issuetype": issue_type,
            "priority": _named(fields.get("priority", {"name": "Medium"}), PRIORITIES),
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
    _reindex(state, issue)
    return JSONResponse(
        {"id": issue_id, "key": key, "self": f"{base_url(request)}{API}/issue/{issue_id}"},
        status_code=201,
    )


def workflow_of(issue_type: str | None) -> Workflow:
    return WORKFLOWS[WORKFLOW_OF_TYPE.get(issue_type or "", "simplified")]


def _reindex(state: SandboxState, issue: JiraIssue) -> None:
    """Queue the issue's fields as they are now for search, visible after the index lag."""
    now = time.monotonic()
    visible = [i for i, (at, _) in enumerate(issue.index) if at <= now]
    if visible:
        del issue.index[: visible[-1]]  # only the newest visible version still matters
    at = max(now + state.jira.search_lag_seconds, issue.indexed_at)
    issue.index.append((at, copy.deepcopy(issue.fields)))


def _indexed(issue: JiraIssue, now: float) -> dict[str, Any] | None:
    """The fields search sees now, or None while the issue is not indexed yet."""
    for at, fields in reversed(issue.index):
        if at <= now:
            return fields
    return None


def _status(base: str, name: str) -> dict[str, Any]:
    status_id, category_id, category_key, colour = STATUSES[name]
    return {
        "self": f"{base}{API}/status/{status_id}",
        "description": "",
        "name": name,
        "id": status_id,
        "statusCategory": {
            "self": f"{base}{API}/statuscategory/{category_id}",
            "id": category_id,
            "key": category_key,
            "colorName": colour,
            "name": {"new": "To Do", "indeterminate": "In Progress", "done": "Done"}[category_key],
        },
    }


def _resolution(base: str, name: str) -> dict[str, Any]:
    resolution_id = RESOLUTIONS[name]
    return {
        "self": f"{base}{API}/resolution/{resolution_id}",
        "id": resolution_id,
        "name": name,
        "description": "",
    }


def _comment(
    base: str, state: SandboxState, issue: JiraIssue, comment: dict[str, Any]
) -> dict[str, Any]:
    shown: dict[str, Any] = {"self": f"{base}{API}/issue/{issue.id}/comment/{comment['id']}"}
    shown.update(copy.deepcopy(comment))
    for who in ("author", "updateAuthor"):
        shown[who] = _user(base, state, comment[who])
    for when in ("created", "updated"):
        shown[when] = _local(state, comment[when])
    return shown


def _history(base: str, state: SandboxState, history: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": history["id"],
        "author": _user(base, state, history["author"]),
        "created": _local(state, history["created"]),
        "items": copy.deepcopy(history["items"]),
    }


def _field(base: str, state: SandboxState, issue: JiraIssue, name: str) -> Any:
    value = issue.fields.get(name)
    if name == "status":
        return _status(base, str(value))
    if name == "resolution":
        return _resolution(base, value) if value else None
    if name in DATE_FIELDS:
        return _local(state, value)
    if name in ("creator", "reporter", "assignee") and isinstance(value, str):
        return _user(base, state, value)
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
        comments = [_comment(base, state, issue, c) for c in issue.comments]
        return {
            "comments": comments,
            "self": f"{base}{API}/issue/{issue.id}/comment",
            "maxResults": len(comments),
            "total": len(comments),
            "startAt": 0,
        }
    return copy.deepcopy(value)


def _render(
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


def _issue(state: SandboxState, key_or_id: str) -> JiraIssue:
    issue = state.jira.find(key_or_id)
    if issue is None:
        raise Reject(
            jira_error(404, ["Issue does not exist or you do not have permission to see it."])
        )
    return issue


def _field_list(request: Request) -> list[str] | None:
    values = request.query_params.getlist("fields")
    if not values:
        return None
    return [f.strip() for v in values for f in v.split(",") if f.strip()]


def _expand(request: Request) -> tuple[str, ...]:
    values = request.query_params.getlist("expand")
    return tuple(e.strip() for v in values for e in v.split(",") if e.strip())


@router.get("/issue/{key}")
async def get_issue(key: str, request: Request) -> JSONResponse:
    state = get_state(request)
    issue = _issue(state, key)
    names = _field_list(request) or ["*all"]
    return JSONResponse(_render(base_url(request), state, issue, names, _expand(request)))


@router.post("/issue/{key}/comment")
async def add_comment(key: str, request: Request) -> JSONResponse:
    state = get_state(request)
    issue = _issue(state, key)
    body = await _object_body(request)
    if "body" not in body:
        raise Reject(jira_error(400, [], {"comment": "Comment body can not be empty!"}))
    if problem := adf_problem(body["body"]):
        raise Reject(jira_error(400, [], {"comment": problem}))
    comment = append_comment(state, issue, body["body"], api_account_id())
    return JSONResponse(_comment(base_url(request), state, issue, comment), status_code=201)


def append_comment(
    state: SandboxState, issue: JiraIssue, adf: Any, account_id: str
) -> dict[str, Any]:
    """A comment by ``account_id``; it updates the issue (not its changelog)."""
    now = _now()
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
    _reindex(state, issue)
    return comment


def _page_params(request: Request, default: int, most: int) -> tuple[int, int]:
    try:
        start = int(request.query_params.get("startAt", 0))
        limit = int(request.query_params.get("maxResults", default))
    except ValueError:
        raise _bad("'startAt' and 'maxResults' must be integers.") from None
    return max(0, start), max(1, min(limit, most))


@router.get("/issue/{key}/comment")
async def list_comments(key: str, request: Request) -> JSONResponse:
    """Comments paged by startAt/maxResults, oldest first (`orderBy=-created`: newest first)."""
    state = get_state(request)
    issue = _issue(state, key)
    order = request.query_params.get("orderBy", "created")
    if order not in ("created", "+created", "-created"):
        raise _bad(f"The value '{order}' is not valid for the parameter 'orderBy'.")
    start, limit = _page_params(request, MAX_COMMENT_RESULTS, MAX_COMMENT_RESULTS)
    ordered = list(reversed(issue.comments)) if order == "-created" else list(issue.comments)
    page = [_comment(base_url(request), state, issue, c) for c in ordered[start : start + limit]]
    return JSONResponse(
        {"startAt": start, "maxResults": limit, "total": len(ordered), "comments": page}
    )


@router.get("/issue/{key}/changelog")
async def list_changelog(key: str, request: Request) -> JSONResponse:
    """The issue's changelog, oldest first, paged by startAt/maxResults (at most 100)."""
    state = get_state(request)
    issue = _issue(state, key)
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


def available_transitions(issue: JiraIssue) -> list[Transition]:
    """The transitions of the issue's workflow from its current status."""
    current = issue.fields.get("status")
    return [
        t
        for t in workflow_of(issue.fields.get("issuetype")).transitions
        if (t.sources is None and t.to != current) or (t.sources and current in t.sources)
    ]


def _screen_fields(base: str, transition: Transition) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "resolution" in transition.screen:
        fields["resolution"] = {
            "required": False,
            "schema": {"type": "resolution", "system": "resolution"},
            "name": "Resolution",
            "key": "resolution",
            "hasDefaultValue": False,
            "operations": ["set"],
            "allowedValues": [_resolution(base, name) for name in RESOLUTIONS],
        }
    return fields


@router.get("/issue/{key}/transitions")
async def list_transitions(key: str, request: Request) -> JSONResponse:
    issue = _issue(get_state(request), key)
    base = base_url(request)
    with_fields = "transitions.fields" in _expand(request)
    listed = []
    for transition in available_transitions(issue):
        shown: dict[str, Any] = {
            "id": transition.id,
            "name": transition.name,
            "to": _status(base, transition.to),
            "hasScreen": bool(transition.screen),
            "isGlobal": transition.sources is None,
            "isInitial": False,
            "isAvailable": True,
            "isConditional": False,
            "isLooped": False,
        }
        if with_fields:
            shown["fields"] = _screen_fields(base, transition)
        listed.append(shown)
    return JSONResponse({"transitions": listed})


def apply_transition(
    state: SandboxState,
    issue: JiraIssue,
    transition_id: str | None,
    fields: dict[str, Any],
    comments: list[Any],
    account_id: str,
) -> None:
    """Move the issue along one of its workflow's transitions, as ``account_id``; `Reject` (400)
    for a transition not available from its status, or a field not on the transition's screen."""
    transition = next((t for t in available_transitions(issue) if t.id == transition_id), None)
    if transition is None:
        raise _bad(f"Transition id '{transition_id}' is not valid for this issue.")
    errors = {
        name: NOT_ON_SCREEN.format(name=name) for name in fields if name not in transition.screen
    }
    chosen = None
    if "resolution" in fields and "resolution" in transition.screen:
        chosen = _named(fields["resolution"], RESOLUTIONS)
        if chosen is None:
            errors["resolution"] = "The resolution selected is invalid."
    if errors:
        raise Reject(jira_error(400, [], errors))
    now = _now()
    old_status, old_resolution = issue.fields["status"], issue.fields.get("resolution")
    done = STATUSES[transition.to][2] == "done"
    resolution = (chosen or old_resolution or DEFAULT_RESOLUTION) if done else None
    items = []
    if transition.to != old_status:
        items.append(
            {
                "field": "status",
                "fieldtype": "jira",
                "fieldId": "status",
                "from": STATUSES[old_status][0],
                "fromString": old_status,
                "to": STATUSES[transition.to][0],
                "toString": transition.to,
            }
        )
    if resolution != old_resolution:
        items.append(
            {
                "field": "resolution",
                "fieldtype": "jira",
                "fieldId": "resolution",
                "from": RESOLUTIONS.get(old_resolution or ""),
                "fromString": old_resolution,
                "to": RESOLUTIONS.get(resolution or ""),
                "toString": resolution,
            }
        )
        issue.fields["resolutiondate"] = now if resolution else None
    issue.fields["status"] = transition.to
    issue.fields["resolution"] = resolution
    issue.fields["updated"] = now
    if items:
        issue.changelog.append(
            {
                "id": str(state.jira.next_history_id),
                "author": account_id,
                "created": now,
                "items": items,
            }
        )
        state.jira.next_history_id += 1
    for adf in comments:
        append_comment(state, issue, adf, account_id)
    _reindex(state, issue)


@router.post("/issue/{key}/transitions")
async def transition_issue(key: str, request: Request) -> Response:
    state = get_state(request)
    issue = _issue(state, key)
    body = await _object_body(request)
    transition = body.get("transition")
    tid = str(transition.get("id")) if isinstance(transition, dict) else None
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        raise _bad("'fields' must be an object.")
    update = body.get("update")
    additions = update.get("comment", []) if isinstance(update, dict) else []
    comments = []
    for addition in additions if isinstance(additions, list) else []:
        adf = addition.get("add", {}).get("body") if isinstance(addition, dict) else None
        if problem := adf_problem(adf):
            raise Reject(jira_error(400, [], {"comment": problem}))
        comments.append(adf)
    apply_transition(state, issue, tid, fields, comments, api_account_id())
    return Response(status_code=204)


@router.get("/myself")
async def myself(request: Request) -> JSONResponse:
    """The account of the credentials: its accountId and the time zone JQL dates are read in."""
    state = get_state(request)
    details = _user(base_url(request), state, api_account_id())
    details["locale"] = "en_US"
    return JSONResponse(details)


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


# --- JQL -----------------------------------------------------------------------------------

_JQL_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>!=|>=|<=|=|>|<|~|,|\(|\))
      | (?P<word>[^\s=!~<>,()"']+)
    )""",
    re.VERBOSE,
)
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*-\d+$")
JQL_FIELDS = {
    "labels": "labels",
    "project": "project",
    "key": "key",
    "issuekey": "key",
    "id": "key",
    "status": "status",
    "summary": "summary",
    "priority": "priority",
    "issuetype": "issuetype",
    "type": "issuetype",
    "updated": "updated",
    "updateddate": "updated",
    "created": "created",
    "createddate": "created",
    "resolved": "resolutiondate",
    "resolutiondate": "resolutiondate",
}
ORDER_FIELDS = ("created", "updated", "key")
COMPARISONS = (">", ">=", "<", "<=")
_DATE_FORMATS = ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d")
_PERIOD_RE = re.compile(r"^([+-]?)\s*((?:\d+\s*[wdhm]\s*)+)$")
_PERIOD_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}

# A test of an issue against one clause: the issue and the fields search sees for it.
Test = Callable[[JiraIssue, dict[str, Any]], bool]


@dataclass(frozen=True)
class _Jql:
    conditions: list[Test]
    order: list[tuple[str, bool]]


def _jql_tokens(jql: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(jql):
        match = _JQL_TOKEN.match(jql, position)
        if match is None or match.end() == position:
            if jql[position:].strip():
                raise _bad(f"Error in the JQL Query: unexpected character at {position}.")
            break
        kind = match.lastgroup
        if kind is not None:
            text = match.group(kind)
            if kind == "string":
                text = re.sub(r"\\(.)", r"\1", text[1:-1])
            tokens.append((kind, text))
        position = match.end()
    return tokens


def parse_jql(state: SandboxState, jql: str) -> _Jql:
    tokens = _jql_tokens(jql)
    position = 0

    def peek_word(offset: int = 0) -> str | None:
        at = position + offset
        if at < len(tokens) and tokens[at][0] == "word":
            return tokens[at][1].lower()
        return None

    def expect_value() -> str:
        nonlocal position
        if position >= len(tokens) or tokens[position][0] not in ("word", "string"):
            raise _bad("Error in the JQL Query: Expecting a value but got the end of the query.")
        value = tokens[position][1]
        position += 1
        return value

    conditions: list[Test] = []
    while position < len(tokens) and not (peek_word() == "order" and peek_word(1) == "by"):
        name = peek_word()
        if name is None:
            raise _bad(
                f"Error in the JQL Query: Expecting a field name but got '{tokens[position][1]}'."
            )
        if name not in JQL_FIELDS:
            raise _bad(
                f"Field '{tokens[position][1]}' does not exist or you do not have permission to"
                " view it."
            )
        position += 1
        if peek_word() == "in" or (peek_word() == "not" and peek_word(1) == "in"):
            negate = peek_word() == "not"
            position += 2 if negate else 1
            if position >= len(tokens) or tokens[position] != ("op", "("):
                raise _bad("Error in the JQL Query: Expecting '(' after 'in'.")
            position += 1
            values = [expect_value()]
            while position < len(tokens) and tokens[position] == ("op", ","):
                position += 1
                values.append(expect_value())
            if position >= len(tokens) or tokens[position] != ("op", ")"):
                raise _bad("Error in the JQL Query: Expecting ')' to close the list.")
            position += 1
            operator = "not in" if negate else "in"
        else:
            if position >= len(tokens) or tokens[position][0] != "op":
                raise _bad("Error in the JQL Query: Expecting an operator after the field name.")
            operator = tokens[position][1]
            dated = JQL_FIELDS[name] in DATE_FIELDS
            allowed = ("=", "!=", *COMPARISONS) if dated else ("=", "!=", "~")
            if operator not in allowed:
                raise _bad(
                    f"The operator '{operator}' is not supported by the '{tokens[position - 1][1]}'"
                    " field."
                )
            position += 1
            values = [expect_value()]
        field = JQL_FIELDS[name]
        if field in DATE_FIELDS:
            conditions.append(_date_condition(state, name, field, operator, values))
        else:
            conditions.append(_condition(state, field, operator, values))
        if position == len(tokens) or (peek_word() == "order" and peek_word(1) == "by"):
            break
        joiner = peek_word()
        if joiner == "and":
            position += 1
            continue
        if joiner == "or":
            raise _bad("Error in the JQL Query: the sandbox supports only AND between clauses.")
        raise _bad(
            f"Error in the JQL Query: Expecting AND or ORDER BY but got '{tokens[position][1]}'."
        )
    order: list[tuple[str, bool]] = []
    if position < len(tokens):
        position += 2
        while True:
            field = peek_word() or ""
            if field not in ORDER_FIELDS:
                shown = tokens[position][1] if position < len(tokens) else ""
                raise _bad(f"Not able to sort using field '{shown}'.")
            position += 1
            descending = False
            if peek_word() in ("asc", "desc"):
                descending = peek_word() == "desc"
                position += 1
            order.append((field, descending))
            if position < len(tokens) and tokens[position] == ("op", ","):
                position += 1
                continue
            if position < len(tokens):
                raise _bad(f"Error in the JQL Query: unexpected '{tokens[position][1]}'.")
            break
    if not conditions:
        # Jira Cloud refuses queries that would walk the whole instance.
        raise _bad(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to"
            " your query."
        )
    return _Jql(conditions, order)


def jql_instant(state: SandboxState, name: str, value: str) -> datetime:
    """A JQL date literal as a UTC instant: an absolute one (minute precision at most) is read in
    the account's time zone, a period (``-5d``, ``4w 2d``, ``-15m``) counts from now."""
    text = value.strip()
    for layout in _DATE_FORMATS:
        try:
            local = datetime.strptime(text, layout)
        except ValueError:
            continue
        return local.replace(tzinfo=ZoneInfo(state.jira.time_zone)).astimezone(UTC)
    period = _PERIOD_RE.match(text)
    if period:
        sign, parts = period.groups()
        delta = timedelta()
        for amount, unit in re.findall(r"(\d+)\s*([wdhm])", parts):
            delta += int(amount) * _PERIOD_UNITS.get(unit, timedelta(minutes=1))
        return utcnow() + (-delta if sign == "-" else delta)
    raise _bad(
        f"Date value '{value}' for field '{name}' is invalid. Valid formats include:"
        " 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period"
        " format e.g. '-5d', '4w 2d'."
    )


def _date_condition(
    state: SandboxState, name: str, field: str, operator: str, values: list[str]
) -> Test:
    (value,) = values
    bound = jql_instant(state, name, value)
    compare: dict[str, Callable[[datetime, datetime], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
    }

    def test(issue: JiraIssue, fields: dict[str, Any]) -> bool:
        stored = fields.get(field)
        moment = parse_jira_time(stored) if isinstance(stored, str) else None
        return moment is not None and compare[operator](moment, bound)

    return test


def _condition(state: SandboxState, field: str, operator: str, values: list[str]) -> Test:
    if field == "project":
        projects = {p.upper() for p in state.config.jira_projects}
        for value in values:
            if value.upper() not in projects:
                raise _bad(f"The value '{value}' does not exist for the field 'project'.")
    if field == "key":
        for value in values:
            if not _KEY_RE.match(value) and not value.isdigit():
                raise _bad(f"The issue key '{value}' for field 'key' is invalid.")
            if state.jira.find(value) is None:
                raise _bad(f"An issue with key '{value}' does not exist for field 'key'.")

    def actual(issue: JiraIssue, fields: dict[str, Any]) -> list[str]:
        if field == "labels":
            return list(fields.get("labels") or [])
        if field == "key":
            return [issue.key, issue.id]
        return [str(fields.get(field) or "")]

    def normal(value: str) -> str:
        return value if field == "labels" else value.lower()

    wanted = {normal(v) for v in values}

    def test(issue: JiraIssue, fields: dict[str, Any]) -> bool:
        have = {normal(v) for v in actual(issue, fields)}
        if operator == "~":
            return any(w in h for w in wanted for h in have)
        hit = bool(have & wanted)
        return not hit if operator in ("!=", "not in") else hit

    return test


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
        raise _bad("The provided next page token is invalid or expired.") from None


def _sort_value(issue: JiraIssue, fields: dict[str, Any], field: str) -> tuple[str, int]:
    if field == "key":
        project, _, number = issue.key.partition("-")
        return project, int(number)
    return str(fields.get(field, "")), int(issue.id)


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
        raise _bad(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to"
            " your query."
        )
    query = parse_jql(state, jql)
    try:
        limit = DEFAULT_MAX_RESULTS if max_results is None else int(max_results)
    except (TypeError, ValueError):
        raise _bad("The value of 'maxResults' must be an integer.") from None
    names = fields or []
    ids_only = all(n in ("id", "key") for n in names)
    limit = max(1, min(limit, MAX_RESULTS_IDS_ONLY if ids_only else MAX_RESULTS_WITH_FIELDS))
    offset = _page_offset(token, jql) if token else 0
    now = time.monotonic()
    # Search reads an index that lags behind every write (pitfall 9): an issue is matched and
    # sorted on its fields as last indexed; reconcileIssues reads the named ones as they are.
    seen: list[tuple[JiraIssue, dict[str, Any]]] = []
    for issue in state.jira.issues.values():
        indexed = issue.fields if issue.id in reconcile else _indexed(issue, now)
        if indexed is not None:
            seen.append((issue, indexed))
    matching = [(i, f) for i, f in seen if all(test(i, f) for test in query.conditions)]
    matching.sort(key=lambda pair: int(pair[0].id))
    for field, descending in reversed(query.order):
        matching.sort(key=_sorter(field), reverse=descending)
    page = [issue for issue, _ in matching[offset : offset + limit]]
    base = base_url(request)
    body: dict[str, Any] = {"issues": [_render(base, state, i, names) for i in page]}
    more = offset + limit < len(matching)
    if more:
        # Absent, not null, on the last page (JRACLOUD-92184).
        body["nextPageToken"] = _page_token(offset + limit, jql)
    body["isLast"] = not more
    return JSONResponse(body)


def _sorter(field: str) -> Callable[[tuple[JiraIssue, dict[str, Any]]], tuple[str, int]]:
    return lambda pair: _sort_value(pair[0], pair[1], field)


@router.get("/search/jql")
async def search_get(request: Request) -> JSONResponse:
    params = request.query_params
    reconcile = [r.strip() for v in params.getlist("reconcileIssues") for r in v.split(",")]
    return await _search(
        request,
        params.get("jql", ""),
        _field_list(request),
        params.get("maxResults"),
        params.get("nextPageToken"),
        reconcile,
    )


@router.post("/search/jql")
async def search_post(request: Request) -> JSONResponse:
    body = await _object_body(request)
    fields = body.get("fields")
    if fields is not None and not (
        isinstance(fields, list) and all(isinstance(f, str) for f in fields)
    ):
        raise _bad("'fields' must be a list of field names.")
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
