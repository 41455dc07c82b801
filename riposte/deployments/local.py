"""Blocks for the local stack: registered types, and documents that point at the sandbox."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import SecretStr

from riposte.blocks import (
    DefenderCredentials,
    EmailSmtp,
    JiraCredentials,
    LastGoodPolicy,
    ServiceNowCredentials,
    SlackIncomingWebhook,
    TeamsWorkflowWebhook,
)
from riposte.blocks.signing_keys import ensure_approval_key
from riposte.limits import ensure_rate_limits
from riposte.sandbox.config import SandboxConfig

BLOCK_TYPES: tuple[type[Block], ...] = (
    DefenderCredentials,
    ServiceNowCredentials,
    JiraCredentials,
    SlackIncomingWebhook,
    TeamsWorkflowWebhook,
    EmailSmtp,
    LastGoodPolicy,
)


def register_block_types() -> list[str]:
    """Register every Riposte block type with the Prefect server; return their slugs."""
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()
    return [b.get_block_type_slug() for b in BLOCK_TYPES]


def sandbox_blocks(sandbox_url: str, config: SandboxConfig | None = None) -> dict[str, Block]:
    """Block documents, by name, that point every client at the sandbox simulators."""
    cfg = config or SandboxConfig()
    base = sandbox_url.rstrip("/")
    return {
        "riposte-defender": DefenderCredentials(
            tenant_id=cfg.tenant_id,
            client_id=cfg.client_id,
            client_secret=SecretStr(cfg.client_secret),
            authority_host=f"{base}/login",
            graph_base_url=f"{base}/graph",
            endpoint_base_url=f"{base}/mde",
            cloud_apps_base_url=f"{base}/mdca",
            arm_base_url=f"{base}/arm",
            subscription_ids=list(cfg.subscription_ids),
            timeout_seconds=10,
        ),
        "riposte-servicenow": ServiceNowCredentials(
            instance_url=f"{base}/servicenow",
            username=cfg.servicenow_user,
            password=SecretStr(cfg.servicenow_password),
            timeout_seconds=10,
        ),
        "riposte-jira": JiraCredentials(
            site_url=f"{base}/jira",
            email=cfg.jira_email,
            api_token=SecretStr(cfg.jira_api_token),
            project_key=cfg.jira_projects[0],
            timeout_seconds=10,
        ),
        "riposte-slack": SlackIncomingWebhook(
            url=SecretStr(f"{base}/slack/services/{cfg.slack_hook_path}"),
            channel="soc-alerts",
            timeout_seconds=10,
        ),
        "riposte-teams": TeamsWorkflowWebhook(
            url=SecretStr(
                f"{base}/teams/workflows/{cfg.teams_flow_id}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sig={cfg.teams_sig}"
            ),
            channel="SOC",
            timeout_seconds=10,
        ),
    }


def save_sandbox_blocks(sandbox_url: str, config: SandboxConfig | None = None) -> list[str]:
    register_block_types()
    names = []
    for name, block in sandbox_blocks(sandbox_url, config).items():
        block.save(name, overwrite=True)
        names.append(f"{block.get_block_type_slug()}/{name}")
    # The key that signs approval links: made once, never replaced (sent links keep working).
    ensure_approval_key()
    # The per-API rate limits the clients acquire strictly inside runs.
    ensure_rate_limits()
    return names
