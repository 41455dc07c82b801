"""ServiceNow credentials and a Table API client that finds or creates incidents."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import Field, SecretStr

from riposte.alerts.response import Priority, Ticket, TicketDraft
from riposte.blocks._http import IDEMPOTENT, build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.ticketing import (
    GROUP_LOOKUP_LIMIT,
    GroupedTicket,
    TicketingClient,
    TicketingCredentials,
    in_group,
)

SYSTEM = "ServiceNow"

# ServiceNow computes priority from impact x urgency; 1 is the highest.
_IMPACT_URGENCY = {
    Priority.CRITICAL: ("1", "1"),
    Priority.HIGH: ("2", "1"),
    Priority.MEDIUM: ("2", "2"),
    Priority.LOW: ("3", "3"),
}


# ServiceNow renders `[code]...[/code]` in journal fields and descriptions as HTML where the
# instance allows code tags (glide.ui.security.allow_codetag): text from an alert must not open one.
_CODE_TAG = re.compile(r"\[\s*(/?)\s*code\s*\]", re.IGNORECASE)


def plain_text(text: str) -> str:
    """``text`` with every `[code]`/`[/code]` tag broken (`(code)`), so it stays text."""
    return _CODE_TAG.sub(lambda m: f"({m.group(1)}code)", text)


class ServiceNowCredentials(TicketingCredentials):
    """A ServiceNow instance and the integration user that opens incidents.

    Example:
        ```python
        snow = ServiceNowCredentials.load("riposte-servicenow")
        ticket = snow.get_client().find_or_create(draft)
        ```
    """

    _block_type_name = "ServiceNow Credentials"
    _block_type_slug = "servicenow-credentials"
    _logo_url = None
    _description = "ServiceNow instance URL and integration user for the Table API."

    instance_url: str = Field(description="e.g. https://example.service-now.com")
    username: str = Field(description="Integration user with the itil role.")
    password: SecretStr = Field(description="Password of the integration user.")
    assignment_group: str | None = Field(None, description="sys_id or name of the SOC group.")
    timeout_seconds: float = Field(15.0, gt=0)

    def get_client(self) -> ServiceNowClient:
        return pooled(self, lambda: ServiceNowClient(self))


class ServiceNowClient(TicketingClient):
    """Incidents through the Table API, keyed by ``correlation_id``."""

    TABLE = "/api/now/table/incident"
    JOURNAL = "/api/now/table/sys_journal_field"

    def __init__(self, creds: ServiceNowCredentials) -> None:
        self.creds = creds
        self.base_url = creds.instance_url.rstrip("/")
        self._http = build_http_client(
            SYSTEM,
            self.base_url,
            timeout=creds.timeout_seconds,
            auth=httpx.BasicAuth(creds.username, creds.password.get_secret_value()),
        )

    def _ticket(self, record: dict[str, Any], created: bool) -> Ticket:
        sys_id = str(record["sys_id"])
        return Ticket(
            system="servicenow",
            key=str(record.get("number") or sys_id),
            id=sys_id,
            url=f"{self.base_url}/nav_to.do?uri=incident.do?sys_id={sys_id}",
            created=created,
        )

    def find(
        self, correlation_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> Ticket | None:
        # The Table API queries the database itself: what was written is found (`recent` is
        # for searches that lag behind writes, such as Jira's).
        response = send(
            self._http,
            SYSTEM,
            "incident lookup",
            "GET",
            self.TABLE,
            params={
                "sysparm_query": f"correlation_id={correlation_key}^ORDERBYsys_created_on",
                "sysparm_fields": "sys_id,number,state,correlation_id",
                "sysparm_limit": "10",
            },
        )
        # An invalid query term is silently dropped by ServiceNow and can match every incident:
        # only an exact correlation_id counts.
        for record in response.json().get("result", []):
            if record.get("correlation_id") == correlation_key:
                return self._ticket(record, created=False)
        return None

    def group(
        self, group_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> list[GroupedTicket]:
        """Incidents whose correlation id is the group key or starts with it (throttle slots)."""
        response = send(
            self._http,
            SYSTEM,
            "incident group lookup",
            "GET",
            self.TABLE,
            params={
                "sysparm_query": f"correlation_idSTARTSWITH{group_key}^ORDERBYDESCsys_created_on",
                "sysparm_fields": "sys_id,number,correlation_id",
                "sysparm_limit": str(GROUP_LOOKUP_LIMIT),
            },
        )
        found = []
        for record in response.json().get("result", []):
            key = str(record.get("correlation_id") or "")
            if in_group(key, group_key):
                found.append(
                    GroupedTicket(ticket=self._ticket(record, created=False), correlation_key=key)
                )
        return found

    def create(self, draft: TicketDraft) -> Ticket:
        impact, urgency = _IMPACT_URGENCY[draft.priority]
        fields: dict[str, str] = {
            "short_description": plain_text(draft.summary),
            "description": plain_text(draft.description),
            "impact": impact,
            "urgency": urgency,
            "category": "security",
            "correlation_id": draft.correlation_key,
            "correlation_display": draft.source_label,
        }
        # The policy's queue, else the block's: ServiceNow resolves a group name or a sys_id.
        group = draft.queue or self.creds.assignment_group
        if group:
            fields["assignment_group"] = group
        response = send(self._http, SYSTEM, "incident creation", "POST", self.TABLE, json=fields)
        return self._ticket(response.json()["result"], created=True)

    def add_note(self, ticket: Ticket, text: str) -> None:
        send(
            self._http,
            SYSTEM,
            f"work note on {ticket.key}",
            "PATCH",
            f"{self.TABLE}/{ticket.id}",
            json={"work_notes": plain_text(text)},
            # A work note is appended to the journal: repeated, it is there twice. A lost
            # answer is left to the step, which reads the notes before writing again.
            extensions={IDEMPOTENT: False},
        )

    def notes(self, ticket: Ticket) -> list[str]:
        """Work notes, read from the journal table (the incident's field always reads empty)."""
        response = send(
            self._http,
            SYSTEM,
            f"work notes of {ticket.key}",
            "GET",
            self.JOURNAL,
            params={
                "sysparm_query": f"element_id={ticket.id}^element=work_notes^ORDERBYsys_created_on",
                "sysparm_fields": "element_id,element,value",
                "sysparm_limit": "10000",
            },
        )
        # The same defence as for lookups: a dropped query term must not mix other tickets in.
        return [
            str(record.get("value") or "")
            for record in response.json().get("result", [])
            if record.get("element_id") == ticket.id and record.get("element") == "work_notes"
        ]
