"""Microsoft Entra ID: the client-credentials token every Defender API takes, and users through
Microsoft Graph (read, disable, revoke sign-in sessions).

Get it from the credentials block: ``DefenderCredentials.load(name).users_client()``. The Entra
app needs the Graph application permissions User.Read.All, User.EnableDisableAccount.All and
User.RevokeSessions.All (or User.ReadWrite.All).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from riposte.blocks._http import IDEMPOTENT, build_http_client, send
from riposte.blocks.errors import ServiceAuthError

ENTRA = "Microsoft Entra ID"
IDENTITY = "Microsoft identity platform"
# `accountEnabled` is not among the properties Graph returns by default.
_USER_FIELDS = "id,userPrincipalName,displayName,accountEnabled,signInSessionsValidFromDateTime"


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client-credentials bearer, cached until shortly before it expires.

    On a 401 the token is fetched again once, in case the identity platform revoked it early.
    """

    # Refresh this long before expiry so a token never expires between fetch and use.
    SKEW_SECONDS: ClassVar[float] = 120.0

    def __init__(
        self,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str,
        *,
        timeout: float,
    ) -> None:
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self._http = build_http_client(IDENTITY, authority_host.rstrip("/"), timeout=timeout)

    def _fetch(self) -> str:
        response = send(
            self._http,
            IDENTITY,
            "token request",
            "POST",
            f"/{quote(self._tenant_id, safe='')}/oauth2/v2.0/token",
            data={
                "client_id": self._client_id,
                "client_secret": self._client_secret.get_secret_value(),
                "grant_type": "client_credentials",
                "scope": self._scope,
            },
            extensions={"riposte_idempotent": True},
        )
        body = response.json()
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise ServiceAuthError(IDENTITY, "token response carried no access_token")
        lifetime = float(body.get("expires_in", 3599))
        self._expires_at = time.monotonic() + lifetime - min(self.SKEW_SECONDS, lifetime / 2)
        self._token = token
        return token

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.monotonic() >= self._expires_at:
                return self._fetch()
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(force=True)}"
            yield request


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
