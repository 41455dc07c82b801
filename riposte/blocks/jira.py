"""Jira Cloud credentials and a REST v3 client that finds or creates issues by label."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, SecretStr

from riposte.alerts.adf import to_adf
from riposte.alerts.response import Priority, Ticket, TicketDraft
from riposte.blocks._http import build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.ticketing import TicketingClient, TicketingCredentials

SYSTEM = "Jira"

_PRIORITY_NAMES = {
    Priority.CRITICAL: "Highest",
    Priority.HIGH: "High",
    Priority.MEDIUM: "Medium",
    Priority.LOW: "Low",
}


class JiraCredentials(TicketingCredentials):
    """A Jira Cloud site, the account that files issues, and the project they go to.

    Example:
        ```python
        jira = JiraCredentials.load("riposte-jira")
        ticket = jira.get_client().find_or_create(draft)
        ```
    """

    _block_type_name = "Jira Credentials"
    _block_type_slug = "jira-credentials"
    _logo_url = None
    _description = "Jira Cloud site, account email and API token, and the project for issues."

    site_url: str = Field(
        description="https://<site>.atlassian.net, or https://api.atlassian.com/ex/jira/<cloudId> "
        "for scoped tokens."
    )
    email: str = Field(description="Atlassian account email.")
    api_token: SecretStr = Field(description="Atlassian API token.")
    project_key: str = Field("SEC", description="Project that receives the issues.")
    issue_type: str = Field("Task")
    timeout_seconds: float = Field(15.0, gt=0)

    def get_client(self) -> JiraClient:
        return pooled(self, lambda: JiraClient(self))


class JiraClient(TicketingClient):
    """Issues through REST v3; the alert's correlation key is kept as an issue label."""

    def __init__(self, creds: JiraCredentials) -> None:
        self.creds = creds
        self.base_url = creds.site_url.rstrip("/")
        self._http = build_http_client(
            SYSTEM,
            self.base_url,
            timeout=creds.timeout_seconds,
            auth=httpx.BasicAuth(creds.email, creds.api_token.get_secret_value()),
        )

    def _ticket(self, issue: dict[str, Any], created: bool) -> Ticket:
        key = str(issue["key"])
        return Ticket(
            system="jira",
            key=key,
            id=str(issue.get("id", key)),
            url=f"{self.base_url}/browse/{key}",
            created=created,
        )

    def find(self, correlation_key: str) -> Ticket | None:
        jql = f'project = "{self.creds.project_key}" AND labels = "{correlation_key}"'
        response = send(
            self._http,
            SYSTEM,
            "issue search",
            "GET",
            "/rest/api/3/search/jql",
            params={"jql": jql, "fields": "labels,status", "maxResults": "10"},
        )
        for issue in response.json().get("issues", []):
            labels = (issue.get("fields") or {}).get("labels") or []
            if correlation_key in labels:
                return self._ticket(issue, created=False)
        return None

    def create(self, draft: TicketDraft) -> Ticket:
        fields: dict[str, Any] = {
            "project": {"key": self.creds.project_key},
            "summary": draft.summary,
            "issuetype": {"name": self.creds.issue_type},
            "labels": [draft.correlation_key, "riposte"],
            "priority": {"name": _PRIORITY_NAMES[draft.priority]},
            "description": to_adf(draft.description),
        }
        response = send(
            self._http,
            SYSTEM,
            "issue creation",
            "POST",
            "/rest/api/3/issue",
            json={"fields": fields},
        )
        return self._ticket(response.json(), created=True)

    def add_note(self, ticket: Ticket, text: str) -> None:
        send(
            self._http,
            SYSTEM,
            f"comment on {ticket.key}",
            "POST",
            f"/rest/api/3/issue/{ticket.key}/comment",
            json={"body": to_adf(text)},
        )
