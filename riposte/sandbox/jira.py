"""Jira Cloud REST API v3: issues with ADF bodies, JQL search paged by token, comments."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.clock import jira_time, utcnow
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
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
# name -> (id, category id, category key, colour)
STATUSES = {
    "To Do": ("10000", 2, "new", "blue-gray"),
    "In Progress": ("3", 4, "indeterminate", "yellow"),
    "Done": ("10001", 3, "done", "green"),
}
TRANSITIONS = {"11": "To Do", "21": "In Progress", "31": "Done"}
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
    "comment",
)


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
    now = jira_time(utcnow())
    stored = {
        name: copy.deepcopy(value)
        for name, value in fields.items()
        if name not in ("project", "issuetype", "priority")
    }
    stored.update(
        {
            "project": project,
            "issuetype": _named(fields["issuetype"], _issue_types(state)),
            "priority": _named(fields.get("priority", {"name": "Medium"}), PRIORITIES),
            "labels": list(fields.get("labels", [])),
            "description": fields.get("description"),
            "status": "To Do",
            "created": now,
            "updated": now,
            "resolution": None,
            "resolutiondate": None,
        }
    )
    jira.issues[issue_id] = JiraIssue(
        id=issue_id,
        key=key,
        fields=stored,
        indexed_at=time.monotonic() + jira.search_lag_seconds,
    )
    return JSONResponse(
        {"id": issue_id, "key": key, "self": f"{base_url(request)}{API}/issue/{issue_id}"},
        status_code=201,
    )


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


def _comment(base: str, issue: JiraIssue, comment: dict[str, Any]) -> dict[str, Any]:
    shown = {"self": f"{base}{API}/issue/{issue.id}/comment/{comment['id']}"}
    shown.update(copy.deepcopy(comment))
    return shown


def _field(base: str, issue: JiraIssue, name: str) -> Any:
    value = issue.fields.get(name)
    if name == "status":
        return _status(base, str(value))
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
        comments = [_comment(base, issue, c) for c in issue.comments]
        return {
            "comments": comments,
            "self": f"{base}{API}/issue/{issue.id}/comment",
            "maxResults": len(comments),
            "total": len(comments),
            "startAt": 0,
        }
    return copy.deepcopy(value)


def _render(base: str, issue: JiraIssue, names: list[str]) -> dict[str, Any]:
    if "*all" in names or "*navigable" in names:
        names = list(dict.fromkeys([*ALL_FIELDS, *issue.fields]))
    wanted = [n for n in names if n not in ("id", "key") and not n.startswith("-")]
    fields = {
        name: _field(base, issue, name)
        for name in wanted
        if name in issue.fields or name in ("comment", "status")
    }
    return {
        "id": issue.id,
        "key": issue.key,
        "self": f"{base}{API}/issue/{issue.id}",
        "fields": fields,
    }


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


@router.get("/issue/{key}")
async def get_issue(key: str, request: Request) -> JSONResponse:
    issue = _issue(get_state(request), key)
    return JSONResponse(_render(base_url(request), issue, _field_list(request) or ["*all"]))


@router.post("/issue/{key}/comment")
async def add_comment(key: str, request: Request) -> JSONResponse:
    state = get_state(request)
    issue = _issue(state, key)
    body = await _object_body(request)
    if "body" not in body:
        raise Reject(jira_error(400, [], {"comment": "Comment body can not be empty!"}))
    if problem := adf_problem(body["body"]):
        raise Reject(jira_error(400, [], {"comment": problem}))
    comment = _append_comment(state, issue, body["body"])
    return JSONResponse(_comment(base_url(request), issue, comment), status_code=201)


def _append_comment(state: SandboxState, issue: JiraIssue, adf: Any) -> dict[str, Any]:
    now = jira_time(utcnow())
    comment = {
        "id": str(state.jira.next_comment_id),
        "author": dict(AUTHOR),
        "body": copy.deepcopy(adf),
        "updateAuthor": dict(AUTHOR),
        "created": now,
        "updated": now,
        "jsdPublic": True,
    }
    state.jira.next_comment_id += 1
    issue.comments.append(comment)
    issue.fields["updated"] = now
    return comment


@router.get("/issue/{key}/comment")
async def list_comments(key: str, request: Request) -> JSONResponse:
    issue = _issue(get_state(request), key)
    comments = [_comment(base_url(request), issue, c) for c in issue.comments]
    return JSONResponse(
        {"startAt": 0, "maxResults": len(comments), "total": len(comments), "comments": comments}
    )


@router.get("/issue/{key}/transitions")
async def list_transitions(key: str, request: Request) -> JSONResponse:
    _issue(get_state(request), key)
    base = base_url(request)
    return JSONResponse(
        {
            "transitions": [
                {
                    "id": tid,
                    "name": name,
                    "to": _status(base, name),
                    "hasScreen": False,
                    "isGlobal": True,
                    "isInitial": False,
                    "isAvailable": True,
                    "isConditional": False,
                    "isLooped": False,
                }
                for tid, name in TRANSITIONS.items()
            ]
        }
    )


@router.post("/issue/{key}/transitions")
async def transition_issue(key: str, request: Request) -> Response:
    state = get_state(request)
    issue = _issue(state, key)
    body = await _object_body(request)
    transition = body.get("transition")
    tid = str(transition.get("id")) if isinstance(transition, dict) else None
    if tid not in TRANSITIONS:
        raise _bad(f"Transition id '{tid}' is not valid for this issue.")
    target = TRANSITIONS[tid]
    now = jira_time(utcnow())
    issue.fields["status"] = target
    issue.fields["updated"] = now
    done = target == "Done"
    issue.fields["resolution"] = {"id": "10000", "name": "Done"} if done else None
    issue.fields["resolutiondate"] = now if done else None
    update = body.get("update")
    additions = update.get("comment", []) if isinstance(update, dict) else []
    for addition in additions if isinstance(additions, list) else []:
        adf = addition.get("add", {}).get("body") if isinstance(addition, dict) else None
        if adf_problem(adf) is None:
            _append_comment(state, issue, adf)
    return Response(status_code=204)


@router.get("/myself")
async def myself() -> JSONResponse:
    return JSONResponse(AUTHOR)


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
      | (?P<op>!=|=|~|,|\(|\))
      | (?P<word>[^\s=!~,()"']+)
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
}
ORDER_FIELDS = ("created", "updated", "key")


@dataclass(frozen=True)
class _Jql:
    conditions: list[Callable[[JiraIssue], bool]]
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

    conditions: list[Callable[[JiraIssue], bool]] = []
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
            if operator not in ("=", "!=", "~"):
                raise _bad(f"Error in the JQL Query: The operator '{operator}' is not supported.")
            position += 1
            values = [expect_value()]
        conditions.append(_condition(state, JQL_FIELDS[name], operator, values))
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


def _condition(
    state: SandboxState, field: str, operator: str, values: list[str]
) -> Callable[[JiraIssue], bool]:
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

    def actual(issue: JiraIssue) -> list[str]:
        if field == "labels":
            return list(issue.fields.get("labels") or [])
        if field == "key":
            return [issue.key, issue.id]
        return [str(issue.fields.get(field) or "")]

    def normal(value: str) -> str:
        return value if field == "labels" else value.lower()

    wanted = {normal(v) for v in values}

    def test(issue: JiraIssue) -> bool:
        have = {normal(v) for v in actual(issue)}
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


def _sort_value(issue: JiraIssue, field: str) -> tuple[str, int]:
    if field == "key":
        project, _, number = issue.key.partition("-")
        return project, int(number)
    return str(issue.fields.get(field, "")), int(issue.id)


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
    # Search reads an index that lags behind writes (pitfall 9); reconcileIssues bypasses it.
    visible = [i for i in state.jira.issues.values() if i.indexed_at <= now or i.id in reconcile]
    matching = [i for i in visible if all(test(i) for test in query.conditions)]
    matching.sort(key=lambda i: int(i.id))
    for field, descending in reversed(query.order):
        matching.sort(key=_sorter(field), reverse=descending)
    page = matching[offset : offset + limit]
    base = base_url(request)
    body: dict[str, Any] = {"issues": [_render(base, i, names) for i in page]}
    more = offset + limit < len(matching)
    if more:
        # Absent, not null, on the last page (JRACLOUD-92184).
        body["nextPageToken"] = _page_token(offset + limit, jql)
    body["isLast"] = not more
    return JSONResponse(body)


def _sorter(field: str) -> Callable[[JiraIssue], tuple[str, int]]:
    return lambda issue: _sort_value(issue, field)


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
        }
        for issue in state.jira.issues.values()
    ]
