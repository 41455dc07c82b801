"""Microsoft Defender credentials (Entra app, client credentials) and the Graph security client."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from riposte.alerts.timestamps import parse_timestamp
from riposte.blocks._http import build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.errors import ServiceAuthError

GRAPH = "Microsoft Graph"
IDENTITY = "Microsoft identity platform"


class DefenderCredentials(Block):
    """An Entra ID application allowed to read and update Defender alerts.

    Example:
        ```python
        defender = DefenderCredentials.load("riposte-defender")
        alert = defender.get_client().get_alert("da637...")
        ```
    """

    _block_type_name = "Defender Credentials"
    _block_type_slug = "defender-credentials"
    _logo_url = None
    _description = "Entra ID app credentials for the Microsoft Defender APIs (Graph security)."

    tenant_id: str = Field(description="Entra ID tenant (directory) id.")
    client_id: str = Field(description="Application (client) id of the Entra app.")
    client_secret: SecretStr = Field(description="Client secret of the Entra app.")
    authority_host: str = Field(
        "https://login.microsoftonline.com",
        description="Identity platform host; point it at the sandbox to stage playbooks.",
    )
    graph_base_url: str = Field(
        "https://graph.microsoft.com", description="Microsoft Graph base URL (without /v1.0)."
    )
    graph_scope: str = Field("https://graph.microsoft.com/.default")
    timeout_seconds: float = Field(15.0, gt=0, description="Timeout of every call, in seconds.")

    def get_client(self) -> GraphSecurityClient:
        """The pooled Graph security client for these credentials (one per process)."""
        return pooled(self, lambda: GraphSecurityClient(self))


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client-credentials bearer, cached until shortly before it expires.

    On a 401 the token is fetched again once, in case the identity platform revoked it early.
    """

    # Refresh this long before expiry so a token never expires between fetch and use.
    SKEW_SECONDS: ClassVar[float] = 120.0

    def __init__(self, creds: DefenderCredentials, scope: str) -> None:
        self._creds = creds
        self._scope = scope
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self._http = build_http_client(
            IDENTITY, creds.authority_host.rstrip("/"), timeout=creds.timeout_seconds
        )

    def _fetch(self) -> str:
        creds = self._creds
        response = send(
            self._http,
            IDENTITY,
            "token request",
            "POST",
            f"/{creds.tenant_id}/oauth2/v2.0/token",
            data={
                "client_id": creds.client_id,
                "client_secret": creds.client_secret.get_secret_value(),
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


def graph_time(value: datetime) -> str:
    """A UTC timestamp as Graph's $filter expects it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GraphSecurityClient:
    """Typed access to Graph ``security/alerts_v2``: list, get, update status, comment."""

    ALERTS = "/v1.0/security/alerts_v2"

    def __init__(self, creds: DefenderCredentials) -> None:
        self.auth = ClientCredentialsAuth(creds, creds.graph_scope)
        self._http = build_http_client(
            GRAPH,
            creds.graph_base_url.rstrip("/"),
            timeout=creds.timeout_seconds,
            auth=self.auth,
            # Without it, Defender for Cloud and Defender for APIs alerts report their service
            # and detection source as "unknownFutureValue".
            headers={"Prefer": "include-unknown-enum-members"},
        )

    def _call(self, action: str, method: str, url: str, **kwargs: Any) -> Any:
        return send(self._http, GRAPH, action, method, url, **kwargs).json()

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"get alert {alert_id}", "GET", f"{self.ALERTS}/{alert_id}"
        )
        return body

    def list_alerts_since(
        self, since: datetime | None, *, page_size: int = 200
    ) -> Iterator[dict[str, Any]]:
        """Alerts updated at or after ``since``, oldest update first, every alert once.

        Pages by ``lastUpdateDateTime`` rather than ``@odata.nextLink``, which real tenants do
        not reliably return. Alerts sharing the boundary timestamp are de-duplicated by id.
        """
        seen: set[str] = set()
        cursor = since
        skip = 0
        while True:
            params: dict[str, str | int] = {
                "$orderby": "lastUpdateDateTime asc",
                "$top": page_size,
            }
            if cursor is not None:
                params["$filter"] = f"lastUpdateDateTime ge {graph_time(cursor)}"
            if skip:
                params["$skip"] = skip
            page = self._call("list alerts", "GET", self.ALERTS, params=params).get("value", [])
            for item in page:
                alert_id = str(item.get("id"))
                if alert_id not in seen:
                    seen.add(alert_id)
                    yield item
            if len(page) < page_size:
                return
            last = parse_timestamp(page[-1].get("lastUpdateDateTime"))
            if last is None or (cursor is not None and last <= cursor):
                # A whole page shares one timestamp: step over it by offset instead.
                skip += len(page)
            else:
                cursor, skip = last, 0

    def update_alert(self, alert_id: str, **changes: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"update alert {alert_id}", "PATCH", f"{self.ALERTS}/{alert_id}", json=changes
        )
        return body

    def add_comment(self, alert_id: str, comment: str) -> list[dict[str, Any]]:
        body = self._call(
            f"comment on alert {alert_id}",
            "POST",
            f"{self.ALERTS}/{alert_id}/comments",
            json={"@odata.type": "microsoft.graph.security.alertComment", "comment": comment},
        )
        comments: list[dict[str, Any]] = body.get("value", [])
        return comments
