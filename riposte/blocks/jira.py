"""Jira Cloud credentials and a REST v3 client that finds or creates issues by label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from riposte.alerts.adf import to_adf
from riposte.alerts.response import Priority, Ticket, TicketDraft
from riposte.blocks._http import build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.errors import ServiceNotFoundError
from riposte.blocks.ticketing import (
    GROUP_LOOKUP_LIMIT,
    GroupedTicket,
    TicketingClient,
    TicketingCredentials,
    in_group,
)

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

    search_lags = True  # "recent updates might not be immediately visible" in JQL search

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

    def _project(self, project: str | None) -> str:
        return project or self.creds.project_key

    def _search(
        self, jql: str, action: str, limit: int, reconcile: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        params: list[tuple[str, str]] = [
            ("jql", jql),
            ("fields", "labels,status"),
            ("maxResults", str(limit)),
        ]
        # Search reads an index that lags behind writes; the issues named here are read as
        # they are now (Jira takes up to 50).
        params += [("reconcileIssues", issue_id) for issue_id in list(reconcile)[:50]]
        response = send(self._http, SYSTEM, action, "GET", "/rest/api/3/search/jql", params=params)
        issues = response.json().get("issues", [])
        return [i for i in issues if isinstance(i, dict)]

    def find(
        self, correlation_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> Ticket | None:
        jql = f'project = "{self._project(project)}" AND labels = "{correlation_key}"'
        for issue in self._search(jql, "issue search", 10, recent):
            labels = (issue.get("fields") or {}).get("labels") or []
            if correlation_key in labels:
                return self._ticket(issue, created=False)
        return None

    def creation_floor(self, project: str | None = None) -> int | None:
        """The number of the project's highest issue key that search shows (0 for none). Search
        may lag, so it may be lower than the real one, never higher: every issue created after
        this call is numbered above it."""
        name = self._project(project)
        issues = self._search(f'project = "{name}" ORDER BY key DESC', "issue key floor", 1)
        if not issues:
            return 0
        _, _, number = str(issues[0].get("key", "")).rpartition("-")
        return int(number) if number.isdigit() else 0

    def created_since(
        self,
        correlation_key: str,
        floor: int,
        *,
        project: str | None = None,
        gap: int = 5,
        limit: int = 300,
    ) -> Ticket | None:
        """The issue labelled ``correlation_key`` among those numbered above ``floor``, read one
        key at a time: reading an issue is not a search, it sees every write. Stops after
        ``gap`` missing numbers in a row (a deleted or moved issue leaves a hole) or ``limit``
        issues."""
        name = self._project(project)
        number, misses = floor, 0
        while misses < gap and number < floor + limit:
            number += 1
            try:
                response = send(
                    self._http,
                    SYSTEM,
                    f"read of {name}-{number}",
                    "GET",
                    f"/rest/api/3/issue/{quote(f'{name}-{number}', safe='')}",
                    params={"fields": "labels"},
                )
            except ServiceNotFoundError:
                misses += 1
                continue
            misses = 0
            issue = response.json()
            if correlation_key in ((issue.get("fields") or {}).get("labels") or []):
                return self._ticket(issue, created=False)
        return None

    def group(
        self, group_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> list[GroupedTicket]:
        """Issues labelled with the group key; each also carries its own correlation key."""
        jql = (
            f'project = "{self._project(project)}" AND labels = "{group_key}" ORDER BY created DESC'
        )
        found = []
        for issue in self._search(jql, "issue group search", GROUP_LOOKUP_LIMIT, recent):
            labels = [str(label) for label in (issue.get("fields") or {}).get("labels") or []]
            if group_key not in labels:
                continue
            # The longest label of the group is the ticket's own key (a slot key under it).
            keys = sorted((label for label in labels if in_group(label, group_key)), key=len)
            found.append(
                GroupedTicket(ticket=self._ticket(issue, created=False), correlation_key=keys[-1])
            )
        return found

    def create(self, draft: TicketDraft) -> Ticket:
        labels = [draft.correlation_key]
        if draft.group_key and draft.group_key != draft.correlation_key:
            labels.append(draft.group_key)
        fields: dict[str, Any] = {
            "project": {"key": self._project(draft.project)},
            "summary": draft.summary,
            "issuetype": {"name": self.creds.issue_type},
            "labels": [*labels, "riposte"],
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

    def notes(self, ticket: Ticket) -> list[str]:
        """The text of every comment, page by page (Jira returns 50 by default)."""
        texts: list[str] = []
        while True:
            response = send(
                self._http,
                SYSTEM,
                f"comments of {ticket.key}",
                "GET",
                f"/rest/api/3/issue/{ticket.key}/comment",
                params={"startAt": str(len(texts)), "maxResults": "100", "orderBy": "created"},
            )
            body = response.json()
            page = body.get("comments") or []
            texts.extend(adf_text(c.get("body")) for c in page if isinstance(c, dict))
            if not page or len(texts) >= int(body.get("total") or 0):
                return texts


def adf_text(node: Any) -> str:
    """The text of an Atlassian Document Format node, paragraphs on their own lines."""
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text") or "")
    if node.get("type") == "hardBreak":
        return "\n"
    parts = [adf_text(child) for child in node.get("content") or []]
    separator = "\n" if node.get("type") in ("doc", "bulletList", "orderedList") else ""
    return separator.join(parts)
