"""The credentials and knobs a sandbox instance accepts; tests make their own with random values."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

from riposte.sandbox.samples import SUBSCRIPTION_ID

ENV_PREFIX = "RIPOSTE_SANDBOX_"

# Application permissions by API (the token audience they appear in), as Entra ID names them.
APP_ROLES_BY_API: dict[str, tuple[str, ...]] = {
    "graph": (
        "SecurityAlert.Read.All",
        "SecurityAlert.ReadWrite.All",
        "SecurityIncident.Read.All",
        "SecurityIncident.ReadWrite.All",
        "User.Read.All",
        "User.ReadWrite.All",
        "User.EnableDisableAccount.All",
        "User.RevokeSessions.All",
    ),
    "endpoint": (
        "Alert.Read.All",
        "Alert.ReadWrite.All",
        "Machine.Read.All",
        "Machine.ReadWrite.All",
        "Machine.Isolate",
        "Ti.ReadWrite",
        "Ti.ReadWrite.All",
    ),
    "cloud_apps": ("Investigation.read", "Investigation.manage"),
}
# What the sandbox's app is granted unless told otherwise: what every Riposte feature needs.
ALL_APP_ROLES = (
    "SecurityAlert.ReadWrite.All",
    "SecurityIncident.ReadWrite.All",
    "User.ReadWrite.All",
    "Alert.ReadWrite.All",
    "Machine.Read.All",
    "Machine.Isolate",
    "Ti.ReadWrite.All",
    "Investigation.manage",
)


class SandboxConfig(BaseModel):
    """What the simulators accept as valid credentials, and a few behaviours.

    Defaults are the well-known sandbox credentials the local stack's blocks use. They are not
    secrets: the sandbox only listens on loopback and holds no real data.
    """

    tenant_id: str = "sandbox-tenant"
    client_id: str = "riposte-sandbox-app"
    client_secret: str = "sandbox-client-secret"
    servicenow_user: str = "riposte"
    servicenow_password: str = "sandbox-snow-password"
    jira_email: str = "riposte@example.com"
    jira_api_token: str = "sandbox-jira-token"
    jira_projects: list[str] = Field(default_factory=lambda: ["SEC"])
    jira_issue_types: list[str] = Field(
        default_factory=lambda: ["Task", "Bug", "Story", "Epic", "Incident", "Subtask"]
    )
    slack_hook_path: str = "T00000000/B00000000/sandboxsandboxsandbox0000"
    teams_flow_id: str = "sandbox-flow"
    teams_sig: str = "sandbox-teams-sig"
    token_lifetime_seconds: int = Field(default=3599, ge=1)
    # Jira Cloud's search reads an index that lags behind writes ("recent updates might not be
    # immediately visible"): a few seconds by default, as on a real site; 0 turns it off.
    jira_search_lag_seconds: float = Field(default=2.0, ge=0.0)
    # The Jira account's time zone (an IANA name): Jira reads a JQL date literal such as
    # `updated >= "2026-12-06 12:00"` in the time zone of the account that searches, and writes
    # timestamps with that zone's offset. `/_sandbox/jira/settings` changes it.
    jira_time_zone: str = "UTC"
    cloud_apps_legacy_token: str = "sandbox-mdca-legacy-token"
    # The Azure subscriptions the simulated tenant holds; the first one owns the sample alerts.
    subscription_ids: list[str] = Field(default_factory=lambda: [SUBSCRIPTION_ID], min_length=1)
    # The application permissions an admin consented to for the app (`RIPOSTE_SANDBOX_APP_ROLES`,
    # CSV or JSON): each token carries those of its API in its `roles` claim, as Entra ID's do.
    app_roles: list[str] = Field(default_factory=lambda: list(ALL_APP_ROLES))
    # Incident fields the ServiceNow integration user cannot read (an ACL): left out of records
    # and, in a query, dropped as an unknown term is, so they match everything.
    servicenow_unreadable_fields: list[str] = Field(default_factory=list)
    # Whether that user may read sys_journal_field (work notes), as the itil role allows.
    servicenow_journal_readable: bool = True
    # Fields missing from the Jira projects' create screen: createmeta leaves them out and an
    # issue creation that sets one is refused, as Jira refuses it.
    jira_screen_missing_fields: list[str] = Field(default_factory=list)

    @field_validator("jira_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def urls(self, base: str) -> dict[str, str]:
        """Where each simulated service lives on a sandbox served at ``base``.

        ``identity`` and ``graph`` stand for ``https://login.microsoftonline.com`` and
        ``https://graph.microsoft.com``, ``servicenow`` for ``https://<instance>.service-now.com``
        and ``jira`` for ``https://<site>.atlassian.net``; ``mde`` for
        ``https://api.security.microsoft.com``, ``mdca`` for
        ``https://<tenant>.<region>.portal.cloudappsecurity.com`` and ``arm`` for
        ``https://management.azure.com``; the webhooks are complete URLs.
        """
        base = base.rstrip("/")
        return {
            "identity": f"{base}/login",
            "token": f"{base}/login/{self.tenant_id}/oauth2/v2.0/token",
            "graph": f"{base}/graph",
            "servicenow": f"{base}/servicenow",
            "jira": f"{base}/jira",
            "mde": f"{base}/mde",
            "mdca": f"{base}/mdca",
            "arm": f"{base}/arm",
            "slack_webhook": f"{base}/slack/services/{self.slack_hook_path}",
            "teams_webhook": (
                f"{base}/teams/workflows/{self.teams_flow_id}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.teams_sig}"
            ),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Defaults overridden by ``RIPOSTE_SANDBOX_<FIELD>`` variables (lists as JSON or CSV)."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if field.annotation == list[str]:
                stripped = raw.strip()
                values[name] = (
                    json.loads(stripped)
                    if stripped.startswith("[")
                    else [part.strip() for part in stripped.split(",") if part.strip()]
                )
            else:
                values[name] = raw
        return cls.model_validate(values)
