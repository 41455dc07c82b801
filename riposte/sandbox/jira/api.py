"""What every Jira route shares: the router and its Basic auth, Jira's error body, accounts and
the time zone they read times in, request bodies, ADF checks and ``{"name"}``/``{"id"}``
references; and ``GET /myself``."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from riposte.sandbox.clock import jira_time, parse_jira_time, utcnow
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import base_url, has_basic_credentials, json_object

API = "/jira/rest/api/3"
NOT_ADF = "Operation value must be an Atlassian Document"
AUTHOR = {
    "accountId": "557058:00000000-0000-4000-8000-sandboxbot000",
    "displayName": "Riposte Automation",
    "active": True,
    "accountType": "atlassian",
}
DATE_FIELDS = frozenset({"created", "updated", "resolutiondate"})


def jira_error(
    status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errorMessages": messages or [], "errors": errors or {}}, status_code=status
    )


def bad(message: str) -> Reject:
    return Reject(jira_error(400, [message]))


async def require_basic(request: Request) -> None:
    config = get_state(request).config
    if not has_basic_credentials(request, config.jira_email, config.jira_api_token):
        raise Reject(
            jira_error(
                401,
                ["You are not authenticated. Authentication required to perform this operation."],
            )
        )


router = APIRouter(prefix=API, dependencies=[Depends(require_basic)])


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


def user_details(base: str, state: SandboxState, account_id: str) -> dict[str, Any]:
    known = AUTHOR if account_id == api_account_id() else state.jira.users.get(account_id)
    details = dict(known or {"accountId": account_id, "displayName": account_id, "active": True})
    details["self"] = f"{base}{API}/user?accountId={account_id}"
    details["timeZone"] = state.jira.time_zone
    return details


def now_utc() -> str:
    """Now, as stored (UTC); `local_time` writes it in the account's time zone."""
    return jira_time(utcnow())


def local_time(state: SandboxState, stored: Any) -> Any:
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


async def object_body(request: Request) -> dict[str, Any]:
    return await json_object(
        request,
        bad,
        "Unexpected character in the request body: it is not valid JSON.",
        "The request body must be a JSON object.",
    )


def named(value: Any, names: dict[str, str]) -> str | None:
    """The canonical name of a ``{"name": ..}`` or ``{"id": ..}`` reference, if it is one."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("name"), str):
        wanted = value["name"].lower()
        return next((n for n in names if n.lower() == wanted), None)
    if value.get("id") is not None:
        return next((n for n, i in names.items() if i == str(value["id"])), None)
    return None


@router.get("/myself")
async def myself(request: Request) -> JSONResponse:
    """The account of the credentials: its accountId and the time zone JQL dates are read in."""
    state = get_state(request)
    details = user_details(base_url(request), state, api_account_id())
    details["locale"] = "en_US"
    return JSONResponse(details)
