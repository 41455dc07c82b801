"""Microsoft Entra ID users through Microsoft Graph: read, disable, revoke sign-in sessions.

Get it from the credentials block: ``DefenderCredentials.load(name).users_client()``. The Entra
app needs the Graph application permissions User.Read.All, User.EnableDisableAccount.All and
User.RevokeSessions.All (or User.ReadWrite.All).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict

from riposte.blocks._http import IDEMPOTENT, build_http_client, send

ENTRA = "Microsoft Entra ID"
# `accountEnabled` is not among the properties Graph returns by default.
_USER_FIELDS = "id,userPrincipalName,displayName,accountEnabled,signInSessionsValidFromDateTime"


class EntraUser(BaseModel):
    """A directory user as containment needs it."""

    model_config = ConfigDict(frozen=True)

    id: str
    user_principal_name: str
    display_name: str | None = None
    account_enabled: bool | None = None
    sessions_valid_from: str | None = None

    @property
    def label(self) -> str:
        return self.user_principal_name or self.id


class EntraUsersClient:
    """Typed access to Graph ``/v1.0/users``; a user is named by object id or UPN.

    Example:
        ```python
        users = DefenderCredentials.load("riposte-defender").users_client()
        users.disable_user("jdoe@contoso.com")
        users.revoke_sessions("jdoe@contoso.com")
        ```
    """

    USERS = "/v1.0/users"

    def __init__(self, base_url: str, auth: httpx.Auth, *, timeout: float) -> None:
        self._http = build_http_client(ENTRA, base_url.rstrip("/"), timeout=timeout, auth=auth)

    def _path(self, user: str, *rest: str) -> str:
        return "/".join((self.USERS, quote(user.strip(), safe="@"), *rest))

    def get_user(self, user: str) -> EntraUser:
        """The user whose object id or UPN is ``user``; `ServiceNotFoundError` if none."""
        body: dict[str, Any] = send(
            self._http,
            ENTRA,
            f"get user {user}",
            "GET",
            self._path(user),
            params={"$select": _USER_FIELDS},
        ).json()
        return EntraUser(
            id=str(body.get("id") or user),
            user_principal_name=str(body.get("userPrincipalName") or ""),
            display_name=body.get("displayName"),
            account_enabled=body.get("accountEnabled"),
            sessions_valid_from=body.get("signInSessionsValidFromDateTime"),
        )

    def disable_user(self, user: str) -> bool:
        """Block the user's sign-in (``accountEnabled: false``); True when this call changed it,
        False when the account was disabled already."""
        if self.get_user(user).account_enabled is False:
            return False
        send(
            self._http,
            ENTRA,
            f"disable user {user}",
            "PATCH",
            self._path(user),
            json={"accountEnabled": False},
        )
        return True

    def revoke_sessions(self, user: str) -> bool:
        """Invalidate the user's refresh tokens and session cookies, so that every app asks
        them to sign in again; True when Graph accepted it."""
        response = send(
            self._http,
            ENTRA,
            f"revoke the sign-in sessions of user {user}",
            "POST",
            self._path(user, "revokeSignInSessions"),
            # Repeating it revokes nothing more than the first call did.
            extensions={IDEMPOTENT: True},
        )
        # The documented answer is 204 No Content; a known issue makes Graph answer 200
        # `{"value": true}` today. Either means done.
        if response.status_code == 204 or not response.content:
            return True
        body: Any = response.json()
        return isinstance(body, dict) and body.get("value") is True
