"""The credentials and knobs a sandbox instance accepts; tests make their own with random values."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

ENV_PREFIX = "RIPOSTE_SANDBOX_"


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
