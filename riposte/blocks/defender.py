"""Microsoft Defender credentials (an Entra app), and the API clients built from them.

The block builds the clients of Graph security, Defender for Endpoint, Defender for Cloud Apps,
Defender for Cloud (ARM) and Entra users, each with its own token scope, and the source-neutral
`AlertSourceClient` over any of them (`DefenderCredentials.source_client`). The clients take
plain values (a base URL, an `httpx.Auth`, a timeout), not the block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from riposte.blocks import alert_sources
from riposte.blocks._pool import pooled
from riposte.blocks.alert_sources import AlertSourceClient
from riposte.blocks.cloud_apps import CloudAppsClient, LegacyTokenAuth
from riposte.blocks.defender_cloud import DefenderCloudClient
from riposte.blocks.defender_endpoint import DefenderEndpointClient
from riposte.blocks.entra import ClientCredentialsAuth, EntraUsersClient
from riposte.blocks.errors import ServiceAuthError
from riposte.blocks.graph import GraphAlertSource, GraphSecurityClient

T = TypeVar("T")


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

    def token_auth(self, scope: str) -> ClientCredentialsAuth:
        """A new client-credentials token source of these credentials for ``scope`` (the
        clients share one per scope; this one is for a check that must not use the cache)."""
        return ClientCredentialsAuth(
            self.authority_host,
            self.tenant_id,
            self.client_id,
            self.client_secret,
            scope,
            timeout=self.timeout_seconds,
        )

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
                auth = self._auths[scope] = self._creds.token_auth(scope)
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
            "graph",
            lambda: GraphSecurityClient(
                creds.graph_base_url, self.auth(creds.graph_scope), timeout=creds.timeout_seconds
            ),
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
