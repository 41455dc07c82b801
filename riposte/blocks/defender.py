"""Microsoft Defender credentials (Entra app, client credentials) and the Graph security client.

The same block also builds the clients of Defender for Endpoint, Defender for Cloud Apps and
Defender for Cloud (ARM), each with its own token scope, and the source-neutral
`AlertSourceClient` over any of them (`DefenderCredentials.source_client`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from riposte.alerts.timestamps import parse_timestamp
from riposte.blocks import alert_sources
from riposte.blocks._http import build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.alert_sources import AlertSourceClient, GraphAlertSource
from riposte.blocks.cloud_apps import CloudAppsClient, LegacyTokenAuth
from riposte.blocks.defender_cloud import DefenderCloudClient
from riposte.blocks.defender_endpoint import DefenderEndpointClient
from riposte.blocks.entra import EntraUsersClient
from riposte.blocks.errors import ServiceAuthError, ServiceRejectedError

T = TypeVar("T")

GRAPH = "Microsoft Graph"
IDENTITY = "Microsoft identity platform"


class DefenderCredentials(Block):
    """An Entra ID application allowed to read and update Defender alerts.

    One application serves every Defender API; each API has its own base URL and token scope.

    Example:
        ```python
        defender = DefenderCredentials.load("riposte-defender")
        alert = defender.get_client().get_alert("da637...")
        source = defender.source_client("defender_cloud")
        ```
    """

    _block_type_name = "Defender Credentials"
    _block_type_slug = "defender-credentials"
    _logo_url = None
    _description = (
        "Entra ID app credentials for the Microsoft Defender APIs: Graph security, Defender for"
        " Endpoint, Defender for Cloud Apps and Defender for Cloud (ARM)."
    )

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
    endpoint_base_url: str = Field(
        "https://api.security.microsoft.com",
        description="Defender for Endpoint API base URL (without /api); a regional host such as"
        " https://eu.api.security.microsoft.com is faster.",
    )
    endpoint_scope: str = Field(
        # The legacy WindowsDefenderATP audience: tokens for the new host's audience are refused.
        "https://api.securitycenter.microsoft.com/.default",
        description="Token scope of the Defender for Endpoint API.",
    )
    cloud_apps_base_url: str | None = Field(
        None,
        description="Defender for Cloud Apps portal URL of the tenant, e.g."
        " https://contoso.us3.portal.cloudappsecurity.com (Settings > Cloud Apps > About).",
    )
    cloud_apps_scope: str = Field(
        "05a65629-4c1b-48c1-a78b-804c4abdd4af/.default",
        description="Token scope of the Defender for Cloud Apps API.",
    )
    cloud_apps_api_token: SecretStr | None = Field(
        None,
        description="Legacy Defender for Cloud Apps API token; when set it is used instead of an"
        " Entra ID token.",
    )
    arm_base_url: str = Field(
        "https://management.azure.com", description="Azure Resource Manager base URL."
    )
    arm_scope: str = Field(
        "https://management.azure.com/.default",
        description="Token scope of Azure Resource Manager.",
    )
    subscription_ids: list[str] = Field(
        default_factory=list,
        description="Azure subscriptions whose Defender for Cloud alerts are read.",
    )
    timeout_seconds: float = Field(15.0, gt=0, description="Timeout of every call, in seconds.")

    def get_client(self) -> GraphSecurityClient:
        """The pooled Graph security client for these credentials (one per process)."""
        return self._clients().graph()

    def endpoint_client(self) -> DefenderEndpointClient:
        """The pooled Defender for Endpoint client for these credentials."""
        return self._clients().endpoint()

    def users_client(self) -> EntraUsersClient:
        """The pooled Entra ID users client (Graph ``/users``) for these credentials."""
        return self._clients().users()

    def cloud_apps_client(self) -> CloudAppsClient:
        """The pooled Defender for Cloud Apps client; needs ``cloud_apps_base_url``."""
        return self._clients().cloud_apps()

    def cloud_client(self) -> DefenderCloudClient:
        """The pooled Defender for Cloud (ARM) client for ``subscription_ids``."""
        return self._clients().defender_cloud()

    def source_client(self, source: str) -> AlertSourceClient:
        """The `AlertSourceClient` of one source: ``graph``, ``defender_endpoint``,
        ``cloud_apps`` or ``defender_cloud``."""
        clients = self._clients()
        if source == alert_sources.GRAPH:
            return clients.graph_source()
        if source == alert_sources.DEFENDER_ENDPOINT:
            return clients.endpoint()
        if source == alert_sources.CLOUD_APPS:
            return clients.cloud_apps()
        if source == alert_sources.DEFENDER_CLOUD:
            return clients.defender_cloud()
        known = ", ".join(alert_sources.SOURCE_NAMES)
        raise ValueError(f"unknown alert source '{source}' (known: {known})")

    def _clients(self) -> DefenderClients:
        return pooled(self, lambda: DefenderClients(self))


class DefenderClients:
    """Every API client of one credentials block, made on first use.

    Clients that share a token scope share one token cache, and each API keeps its own
    connection pool. Pooled per block configuration, so a rotated secret gets new clients.
    """

    def __init__(self, creds: DefenderCredentials) -> None:
        self._creds = creds
        # Re-entrant: a client factory asks for its token cache while the lock is held.
        self._lock = threading.RLock()
        self._auths: dict[str, ClientCredentialsAuth] = {}
        self._clients: dict[str, Any] = {}

    def auth(self, scope: str) -> ClientCredentialsAuth:
        """The token cache of one scope."""
        with self._lock:
            auth = self._auths.get(scope)
            if auth is None:
                auth = self._auths[scope] = ClientCredentialsAuth(self._creds, scope)
            return auth

    def _get(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = factory()
            made: T = client
            return made

    def graph(self) -> GraphSecurityClient:
        creds = self._creds
        return self._get(
            "graph", lambda: GraphSecurityClient(creds, auth=self.auth(creds.graph_scope))
        )

    def graph_source(self) -> GraphAlertSource:
        return self._get("graph_source", lambda: GraphAlertSource(self.graph()))

    def endpoint(self) -> DefenderEndpointClient:
        creds = self._creds
        return self._get(
            "endpoint",
            lambda: DefenderEndpointClient(
                creds.endpoint_base_url,
                self.auth(creds.endpoint_scope),
                timeout=creds.timeout_seconds,
            ),
        )

    def users(self) -> EntraUsersClient:
        creds = self._creds
        return self._get(
            "users",
            lambda: EntraUsersClient(
                creds.graph_base_url, self.auth(creds.graph_scope), timeout=creds.timeout_seconds
            ),
        )

    def cloud_apps(self) -> CloudAppsClient:
        creds = self._creds
        if not creds.cloud_apps_base_url:
            # Tenant-specific, so there is no default to fall back on.
            raise ServiceAuthError(
                "Microsoft Defender for Cloud Apps",
                "the credentials block has no cloud_apps_base_url (the portal URL shown under"
                " Settings > Cloud Apps > About)",
            )
        base_url = creds.cloud_apps_base_url
        token = creds.cloud_apps_api_token
        auth: httpx.Auth = (
            LegacyTokenAuth(token) if token is not None else self.auth(creds.cloud_apps_scope)
        )
        return self._get(
            "cloud_apps", lambda: CloudAppsClient(base_url, auth, timeout=creds.timeout_seconds)
        )

    def defender_cloud(self) -> DefenderCloudClient:
        creds = self._creds
        return self._get(
            "defender_cloud",
            lambda: DefenderCloudClient(
                creds.arm_base_url,
                self.auth(creds.arm_scope),
                subscription_ids=creds.subscription_ids,
                timeout=creds.timeout_seconds,
            ),
        )


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


_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def _updated(alert: dict[str, Any]) -> datetime:
    return parse_timestamp(alert.get("lastUpdateDateTime")) or _NEVER


class GraphSecurityClient:
    """Typed access to Graph ``security/alerts_v2``: list, get, update status, comment."""

    ALERTS = "/v1.0/security/alerts_v2"

    def __init__(
        self, creds: DefenderCredentials, auth: ClientCredentialsAuth | None = None
    ) -> None:
        self.auth = auth or ClientCredentialsAuth(creds, creds.graph_scope)
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

    def _alert_path(self, alert_id: str) -> str:
        # Quoted whole: an id is a value, never a path (`../../x` must not leave the API).
        return f"{self.ALERTS}/{quote(alert_id, safe='')}"

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"get alert {alert_id}", "GET", self._alert_path(alert_id)
        )
        return body

    def list_alerts_since(
        self,
        since: datetime | None,
        *,
        page_size: int = 500,
        until: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Alerts updated at or after ``since`` (and before ``until``, default now), oldest
        update first, each once in its latest version.

        Uses only the documented query options (`$filter`, `$top`, `$skip`): the service's order
        is its own, so the window is read whole, then sorted. Every `@odata.nextLink` the service
        sends is followed (on the Graph host only). Some tenants send none (shared reference,
        pitfall 2): then a full page means the window holds more, and it is split in two by time
        and each half read the same way; a window of one millisecond is read by `$skip`.
        """
        start = since or _NEVER
        end = until or datetime.now(UTC) + timedelta(seconds=1)
        latest: dict[str, dict[str, Any]] = {}
        self._read_window(start, end, page_size, latest)
        yield from sorted(latest.values(), key=lambda a: (_updated(a), str(a.get("id"))))

    def _read_window(
        self, start: datetime, end: datetime, page_size: int, latest: dict[str, dict[str, Any]]
    ) -> None:
        window = (
            f"lastUpdateDateTime ge {graph_time(start)} and lastUpdateDateTime lt {graph_time(end)}"
        )
        params: dict[str, str | int] = {"$filter": window, "$top": page_size}
        body = self._call("list alerts", "GET", self.ALERTS, params=params)
        page = self._keep(body, latest)
        if body.get("@odata.nextLink"):
            while link := body.get("@odata.nextLink"):
                body = self._call("list alerts (next page)", "GET", self._same_host(str(link)))
                self._keep(body, latest)
            return
        if len(page) < page_size:
            return  # the whole window fitted in one page
        if end - start > timedelta(milliseconds=1):
            middle = start + (end - start) / 2
            self._read_window(start, middle, page_size, latest)
            self._read_window(middle, end, page_size, latest)
            return
        skip = len(page)  # one millisecond holds more than a page: $skip, documented
        while len(page) == page_size:
            params["$skip"] = skip
            page = self._keep(self._call("list alerts", "GET", self.ALERTS, params=params), latest)
            skip += len(page)

    @staticmethod
    def _keep(body: dict[str, Any], latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        page = [item for item in body.get("value", []) if isinstance(item, dict)]
        for item in page:
            alert_id = str(item.get("id"))
            known = latest.get(alert_id)
            if known is None or _updated(item) >= _updated(known):
                latest[alert_id] = item
        return page

    def _same_host(self, link: str) -> str:
        """A nextLink, if it points at the Graph host the client talks to: the token goes with
        it, so a link elsewhere is refused."""
        target, base = httpx.URL(link), self._http.base_url
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise ServiceRejectedError(
                GRAPH, "list alerts: the next page link leaves the Graph host"
            )
        return link

    def update_alert(self, alert_id: str, **changes: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"update alert {alert_id}", "PATCH", self._alert_path(alert_id), json=changes
        )
        return body

    # --- incidents (`security/incidents`: SecurityIncident.ReadWrite.All) ----------------------

    INCIDENTS = "/v1.0/security/incidents"

    def _incident_path(self, incident_id: str) -> str:
        return f"{self.INCIDENTS}/{quote(incident_id, safe='')}"

    def get_incident(self, incident_id: str, *, with_alerts: bool = False) -> dict[str, Any]:
        """The incident (``with_alerts``: its alerts too, `$expand=alerts`)."""
        params = {"$expand": "alerts"} if with_alerts else None
        body: dict[str, Any] = self._call(
            f"get incident {incident_id}", "GET", self._incident_path(incident_id), params=params
        )
        return body

    def update_incident(self, incident_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH the given fields (`customTags` replaces the whole list); the updated incident."""
        body: dict[str, Any] = self._call(
            f"update incident {incident_id}",
            "PATCH",
            self._incident_path(incident_id),
            json=changes,
        )
        return body

    def comment_incident(self, incident_id: str, comment: str) -> list[dict[str, Any]]:
        return self._comment(
            f"comment on incident {incident_id}", self._incident_path(incident_id), comment
        )

    def add_comment(self, alert_id: str, comment: str) -> list[dict[str, Any]]:
        return self._comment(f"comment on alert {alert_id}", self._alert_path(alert_id), comment)

    def _comment(self, action: str, path: str, comment: str) -> list[dict[str, Any]]:
        """POST a comment; Graph answers with the whole comment list."""
        body = self._call(
            action,
            "POST",
            f"{path}/comments",
            json={"@odata.type": "microsoft.graph.security.alertComment", "comment": comment},
        )
        comments: list[dict[str, Any]] = body.get("value", [])
        return comments
