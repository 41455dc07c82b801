"""Microsoft Graph's Entra ID users: get (with $select), enable or disable, revoke sign-in
sessions; the directory is made of the users the alerts name and those the sandbox is given
(``/_sandbox/graph/users``)."""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from riposte.sandbox.graph.api import GRAPH_ROOT, bad_request, control_router, graph_error, router
from riposte.sandbox.identity import needs_role
from riposte.sandbox.state import Reject, SandboxState, get_state
from riposte.sandbox.web import json_object

_USER_READ = ("User.Read.All", "User.ReadWrite.All")
_USER_DISABLE = ("User.EnableDisableAccount.All", "User.ReadWrite.All")
_USER_REVOKE = ("User.RevokeSessions.All", "User.ReadWrite.All")


def _denied(message: str) -> JSONResponse:
    # Directory writes answer as Entra ID does, whatever roles are missing.
    return graph_error(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


# What `GET /users/{id}` returns without $select: `accountEnabled` is not among them.
DEFAULT_USER_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
# PATCH-able here, and the JSON type each takes.
_WRITABLE_USER_PROPERTIES: dict[str, type | tuple[type, ...]] = {
    "accountEnabled": bool,
    "displayName": str,
    "jobTitle": (str, type(None)),
    "department": (str, type(None)),
    "officeLocation": (str, type(None)),
    "mobilePhone": (str, type(None)),
}
_PRIVATE = "_"  # keys of a user record that the API never shows
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def user_record(
    object_id: str,
    upn: str,
    display_name: str | None = None,
    *,
    account_enabled: bool = True,
    created: str | None = None,
    sam_account_name: str | None = None,
) -> dict[str, Any]:
    name = display_name or upn.split("@", 1)[0]
    given, _, surname = name.partition(" ")
    return {
        "id": object_id,
        "userPrincipalName": upn,
        "displayName": name,
        "givenName": given or None,
        "surname": surname or None,
        "mail": upn,
        "businessPhones": [],
        "jobTitle": None,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "department": None,
        "accountEnabled": account_enabled,
        "userType": "Member",
        "createdDateTime": created,
        "signInSessionsValidFromDateTime": created,
        "onPremisesSamAccountName": sam_account_name,
        "_sessionRevocations": 0,
    }


def _clean(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _evidence_users(state: SandboxState) -> list[dict[str, str | None]]:
    """Users named by the alerts: Graph userEvidence, MDE User evidence, MDCA accounts."""
    found: list[dict[str, str | None]] = []
    for alert in state.graph.alerts.values():
        evidence = alert.get("evidence")
        for item in evidence if isinstance(evidence, list) else ():
            if not isinstance(item, dict):
                continue
            if not str(item.get("@odata.type", "")).lower().endswith("userevidence"):
                continue
            nested = item.get("userAccount")
            account: dict[str, Any] = nested if isinstance(nested, dict) else {}
            found.append(
                {
                    "id": _clean(account.get("azureAdUserId")),
                    "upn": _clean(account.get("userPrincipalName")),
                    "name": _clean(account.get("displayName")),
                    "sam": _clean(account.get("accountName")),
                }
            )
    for alert in state.endpoint.alerts.values():
        evidence = alert.get("evidence")
        for item in evidence if isinstance(evidence, list) else ():
            if isinstance(item, dict) and str(item.get("entityType", "")).lower() == "user":
                found.append(
                    {
                        "id": _clean(item.get("aadUserId")),
                        "upn": _clean(item.get("userPrincipalName")),
                        "name": None,
                        "sam": _clean(item.get("accountName")),
                    }
                )
    for alert in state.cloud_apps.alerts.values():
        entities = alert.get("entities")
        for item in entities if isinstance(entities, list) else ():
            if isinstance(item, dict) and item.get("type") == "account":
                raw_id = _clean(item.get("id"))
                entra_id = raw_id if raw_id and _GUID_RE.match(raw_id) else None
                found.append(
                    {"id": entra_id, "upn": _clean(item.get("pa")), "name": None, "sam": None}
                )
    return found


def sync_users(state: SandboxState) -> None:
    """Make every user the alerts name (with a UPN) a directory user; known users keep their
    state. A user the alerts give no object id gets a stable one derived from the UPN."""
    users = state.graph.users
    known_upns = {str(u["userPrincipalName"]).lower() for u in users.values()}
    for found in _evidence_users(state):
        upn = found["upn"]
        if not upn or "@" not in upn or upn.lower() in known_upns:
            continue
        object_id = (found["id"] or str(uuid.uuid5(uuid.NAMESPACE_URL, upn.lower()))).lower()
        if object_id in users:
            continue
        users[object_id] = user_record(
            object_id,
            upn,
            found["name"],
            created=state.graph_clock.next(),
            sam_account_name=found["sam"],
        )
        known_upns.add(upn.lower())


def _user(state: SandboxState, key: str) -> dict[str, Any]:
    """The user whose object id or UPN is ``key``, or Graph's 404."""
    sync_users(state)
    wanted = key.strip().lower()
    user = state.graph.users.get(wanted) or next(
        (u for u in state.graph.users.values() if str(u["userPrincipalName"]).lower() == wanted),
        None,
    )
    if user is None:
        raise Reject(
            graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property"
                " objects are not present.",
            )
        )
    return user


def _public(user: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in user.items() if not k.startswith(_PRIVATE)}


@router.get("/users/{user_key}", dependencies=[Depends(needs_role(_USER_READ, _denied))])
async def get_user(user_key: str, request: Request) -> JSONResponse:
    user = _public(_user(get_state(request), user_key))
    select = request.query_params.get("$select")
    if select:
        names = [n.strip() for n in select.split(",") if n.strip()]
        for name in names:
            if name not in user:
                raise bad_request(
                    f"Could not find a property named '{name}' on type 'microsoft.graph.user'."
                )
        context = f"{GRAPH_ROOT}/$metadata#users({','.join(names)})/$entity"
    else:
        names = list(DEFAULT_USER_PROPERTIES)
        context = f"{GRAPH_ROOT}/$metadata#users/$entity"
    body: dict[str, Any] = {"@odata.context": context}
    body.update({name: user.get(name) for name in names})
    return JSONResponse(body)


def _user_bad_request(message: str) -> Reject:
    return Reject(graph_error(400, "Request_BadRequest", message))


@router.patch("/users/{user_key}", dependencies=[Depends(needs_role(_USER_DISABLE, _denied))])
async def update_user(user_key: str, request: Request) -> Response:
    body = await json_object(
        request,
        _user_bad_request,
        "Invalid request body: {reason}.",
        "The request body must be a JSON object.",
    )
    user = _user(get_state(request), user_key)
    update: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        expected = _WRITABLE_USER_PROPERTIES.get(key)
        if expected is None:
            raise _user_bad_request(
                f"Property '{key}' does not exist as a declared property or extension property."
            )
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise _user_bad_request(
                f"Invalid value specified for property '{key}' of resource 'User'."
            )
        update[key] = value
    user.update(update)
    return Response(status_code=204)


@router.post(
    "/users/{user_key}/revokeSignInSessions",
    dependencies=[Depends(needs_role(_USER_REVOKE, _denied))],
)
async def revoke_sign_in_sessions(user_key: str, request: Request) -> Response:
    """204 No Content, as documented (user-revokesigninsessions); a known issue makes tenants
    answer 200 `{"value": true}` today, which the sandbox does when told to."""
    state = get_state(request)
    user = _user(state, user_key)
    user["signInSessionsValidFromDateTime"] = state.graph_clock.next()
    user["_sessionRevocations"] += 1
    if state.graph.revoke_answers_200:
        body = {"@odata.context": f"{GRAPH_ROOT}/$metadata#Edm.Boolean", "value": True}
        return JSONResponse(body)
    return Response(status_code=204)


# --- controls (mounted under /_sandbox) --------------------------------------------------------


class UserIn(BaseModel):
    """A directory user of the simulated tenant (beyond those its alerts name)."""

    userPrincipalName: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")  # noqa: N815
    id: str | None = None
    displayName: str | None = None  # noqa: N815
    accountEnabled: bool = True  # noqa: N815


@control_router.get("/users")
async def users(request: Request) -> list[dict[str, Any]]:
    """Every directory user, with how many times its sign-in sessions were revoked."""
    state = get_state(request)
    sync_users(state)
    return [
        {**_public(u), "sessionRevocations": u["_sessionRevocations"]}
        for u in state.graph.users.values()
    ]


@control_router.post("/users")
async def add_users(items: UserIn | list[UserIn], request: Request) -> dict[str, Any]:
    state = get_state(request)
    ids = []
    for item in items if isinstance(items, list) else [items]:
        object_id = (item.id or str(uuid.uuid4())).lower()
        state.graph.users[object_id] = user_record(
            object_id,
            item.userPrincipalName,
            item.displayName,
            account_enabled=item.accountEnabled,
            created=state.graph_clock.next(),
        )
        ids.append(object_id)
    return {"loaded": len(ids), "ids": ids}
