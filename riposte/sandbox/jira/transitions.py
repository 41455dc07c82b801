"""Jira transitions: list those an issue's workflow offers from its status (with their screens),
and move an issue along one, as the API or an analyst does, with its changelog."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from riposte.sandbox.jira.api import (
    adf_problem,
    api_account_id,
    bad,
    jira_error,
    named,
    now_utc,
    object_body,
    router,
)
from riposte.sandbox.jira.issues import (
    NOT_ON_SCREEN,
    append_comment,
    expand_param,
    find_issue,
    reindex,
)
from riposte.sandbox.jira.workflows import (
    DEFAULT_RESOLUTION,
    RESOLUTIONS,
    STATUSES,
    Transition,
    available_transitions,
    resolution_view,
    status_view,
)
from riposte.sandbox.state import JiraIssue, Reject, SandboxState, get_state
from riposte.sandbox.web import base_url


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
            "allowedValues": [resolution_view(base, name) for name in RESOLUTIONS],
        }
    return fields


@router.get("/issue/{key}/transitions")
async def list_transitions(key: str, request: Request) -> JSONResponse:
    issue = find_issue(get_state(request), key)
    base = base_url(request)
    with_fields = "transitions.fields" in expand_param(request)
    listed = []
    for transition in available_transitions(issue):
        shown: dict[str, Any] = {
            "id": transition.id,
            "name": transition.name,
            "to": status_view(base, transition.to),
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
        raise bad(f"Transition id '{transition_id}' is not valid for this issue.")
    errors = {
        name: NOT_ON_SCREEN.format(name=name) for name in fields if name not in transition.screen
    }
    chosen = None
    if "resolution" in fields and "resolution" in transition.screen:
        chosen = named(fields["resolution"], RESOLUTIONS)
        if chosen is None:
            errors["resolution"] = "The resolution selected is invalid."
    if errors:
        raise Reject(jira_error(400, [], errors))
    now = now_utc()
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
    reindex(state, issue)


@router.post("/issue/{key}/transitions")
async def transition_issue(key: str, request: Request) -> Response:
    state = get_state(request)
    issue = find_issue(state, key)
    body = await object_body(request)
    transition = body.get("transition")
    tid = str(transition.get("id")) if isinstance(transition, dict) else None
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        raise bad("'fields' must be an object.")
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
