"""ServiceNow credentials and a Table API client that finds or creates incidents."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import Field, SecretStr

from riposte.alerts.response import Priority, Ticket, TicketDraft
from riposte.blocks._http import IDEMPOTENT, build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.errors import ServiceRejectedError
from riposte.blocks.ticketing import (
    CORRELATION_PREFIX,
    GROUP_LOOKUP_LIMIT,
    GroupedTicket,
    TicketChange,
    TicketingClient,
    TicketingCredentials,
    TicketStatus,
    TicketWrite,
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


# Incident states (strings, as every value of the Table API).
IN_PROGRESS, RESOLVED, CLOSED, CANCELED = "2", "6", "7", "8"
_STATUS: dict[str, TicketStatus] = {RESOLVED: "resolved", CLOSED: "closed", CANCELED: "closed"}
_STATE_NAMES = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed",
                "8": "Canceled"}  # fmt: skip
# What a sync reads of a changed incident; `resolved_by.user_name` is dot-walked through the
# sys_user reference, so that it compares with `sys_updated_by`.
_CHANGE_FIELDS = (
    "sys_id,number,correlation_id,state,close_code,close_notes,sys_updated_on,sys_updated_by,"
    "resolved_by.user_name"
)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the Table API's date/time values, in UTC


def _servicenow_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


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

    # Prefect registers a block type by these attributes: each block declares its own.
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

    def _result(self, action: str, path: str, **params: str) -> Any:
        """The `result` of a GET on the Table API: the rows of a query, or one record. A query
        term the instance does not know is dropped silently and can match every record, so
        callers check each row against what they asked for."""
        response = send(self._http, SYSTEM, action, "GET", path, params=params)
        return response.json().get("result", [])

    def find(
        self, correlation_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> Ticket | None:
        # The Table API queries the database itself: what was written is found (`recent` is
        # for searches that lag behind writes, such as Jira's).
        rows = self._result(
            "incident lookup",
            self.TABLE,
            sysparm_query=f"correlation_id={correlation_key}^ORDERBYsys_created_on",
            sysparm_fields="sys_id,number,state,correlation_id",
            sysparm_limit="10",
        )
        # Only an exact correlation_id counts.
        for record in rows:
            if record.get("correlation_id") == correlation_key:
                return self._ticket(record, created=False)
        return None

    def group(
        self, group_key: str, *, project: str | None = None, recent: Sequence[str] = ()
    ) -> list[GroupedTicket]:
        """Incidents whose correlation id is the group key or starts with it (throttle slots)."""
        rows = self._result(
            "incident group lookup",
            self.TABLE,
            sysparm_query=f"correlation_idSTARTSWITH{group_key}^ORDERBYDESCsys_created_on",
            sysparm_fields="sys_id,number,correlation_id",
            sysparm_limit=str(GROUP_LOOKUP_LIMIT),
        )
        found = []
        for record in rows:
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
        return [text for _, text in self._journal(ticket)]

    def own_notes(self, ticket: Ticket) -> list[str]:
        """The work notes the integration user wrote (the journal's `sys_created_by`)."""
        return [text for by, text in self._journal(ticket) if by == self.creds.username]

    def _journal(self, ticket: Ticket) -> list[tuple[str, str]]:
        """(sys_created_by, value) of the incident's work notes, oldest first."""
        rows = self._result(
            f"work notes of {ticket.key}",
            self.JOURNAL,
            sysparm_query=f"element_id={ticket.id}^element=work_notes^ORDERBYsys_created_on",
            sysparm_fields="element_id,element,value,sys_created_by",
            sysparm_limit="10000",
        )
        # The same defence as for lookups: a dropped query term must not mix other tickets in.
        return [
            (str(record.get("sys_created_by") or ""), str(record.get("value") or ""))
            for record in rows
            if record.get("element_id") == ticket.id and record.get("element") == "work_notes"
        ]

    # --- two-way sync -------------------------------------------------------------------------

    def _fields(self, ticket: Ticket, fields: str) -> dict[str, Any]:
        record = self._result(
            f"read of {ticket.key}",
            f"{self.TABLE}/{ticket.id}",
            sysparm_fields=fields,
            sysparm_exclude_reference_link="true",
        )
        return record if isinstance(record, dict) else {}

    def description(self, ticket: Ticket) -> str:
        return str(self._fields(ticket, "description").get("description") or "")

    def status(self, ticket: Ticket) -> TicketStatus:
        return _STATUS.get(str(self._state(ticket).get("state") or ""), "open")

    def correlation_key(self, ticket: Ticket) -> str:
        key = str(self._fields(ticket, "correlation_id").get("correlation_id") or "")
        return key if key.startswith(CORRELATION_PREFIX) else ""

    def by_key(self, key: str) -> Ticket | None:
        """The incident numbered ``key`` (checked on the answer: a dropped query term matches
        every incident)."""
        rows = self._result(
            f"incident {key} lookup",
            self.TABLE,
            sysparm_query=f"number={key}",
            sysparm_fields="sys_id,number",
            sysparm_limit="10",
        )
        for record in rows:
            if isinstance(record, dict) and record.get("number") == key and record.get("sys_id"):
                return self._ticket(record, created=False)
        return None

    def changed_since(
        self, since: datetime, project: str | None = None, *, page_size: int = 100
    ) -> list[TicketChange]:
        """Incidents whose correlation id starts with Riposte's prefix, updated at or after
        ``since``, oldest update first.

        Pages go by update time (`sys_updated_on>=` the last one read, then the rows of that
        second skipped), not by offset alone: an incident updated while the pages are read moves
        to the end of the order, and an offset would then skip the one behind it. The query and
        the prefix are checked on every row, as a dropped query term matches everything.
        """
        if since.tzinfo is None:
            raise ValueError("since must carry a time zone")
        floor = since.astimezone(UTC).replace(microsecond=0)  # the API's values are to the second
        cursor, skip = floor, 0
        found: dict[str, TicketChange] = {}
        while True:
            query = (
                f"correlation_idSTARTSWITH{CORRELATION_PREFIX}"
                # GlideDateTime's string constructor reads UTC; `gs.dateGenerate` would read the
                # integration user's time zone, hours off for a user not on UTC.
                f"^sys_updated_on>=javascript:new GlideDateTime('{cursor:%Y-%m-%d %H:%M:%S}')"
                "^ORDERBYsys_updated_on^ORDERBYsys_id"
            )
            result = self._result(
                "changed incidents lookup",
                self.TABLE,
                sysparm_query=query,
                sysparm_fields=_CHANGE_FIELDS,
                sysparm_exclude_reference_link="true",
                sysparm_limit=str(page_size),
                sysparm_offset=str(skip),
            )
            rows = [r for r in result if isinstance(r, dict)]
            for row in rows:
                change = self._change(row, since)
                if change is not None:
                    found[change.ticket.id] = change
            if len(rows) < page_size:
                break
            last = _servicenow_time(str(rows[-1].get("sys_updated_on") or ""))
            if last is None or last <= cursor:
                skip += len(rows)  # one crowded second (or rows out of order): on by offset
            else:
                cursor = last
                skip = sum(1 for r in rows if r.get("sys_updated_on") == rows[-1]["sys_updated_on"])
        return sorted(found.values(), key=lambda c: (c.updated_at, c.ticket.key))

    def _change(self, row: dict[str, Any], since: datetime) -> TicketChange | None:
        key = str(row.get("correlation_id") or "")
        updated_at = _servicenow_time(str(row.get("sys_updated_on") or ""))
        if not key.startswith(CORRELATION_PREFIX) or not row.get("sys_id") or updated_at is None:
            return None
        if updated_at < since.astimezone(UTC).replace(microsecond=0):
            return None
        updated_by = str(row.get("sys_updated_by") or "")
        return TicketChange(
            ticket=self._ticket(row, created=False),
            correlation_key=key,
            status=_STATUS.get(str(row.get("state") or ""), "open"),
            resolution=str(row.get("close_code") or "") or None,
            resolution_notes=str(row.get("close_notes") or "") or None,
            updated_at=updated_at,
            updated_by=updated_by,
            resolved_by=str(row.get("resolved_by.user_name") or "") or None,
            by_riposte=updated_by == self.creds.username,
        )

    def _state(self, ticket: Ticket) -> dict[str, Any]:
        return self._fields(ticket, "sys_id,number,state,close_code")

    def resolve(self, ticket: Ticket, resolution: str, notes: str) -> TicketWrite:
        """State Resolved with ``resolution`` as the close code and ``notes`` as the close notes
        (both mandatory: the instance's data policy refuses a resolution without them). The
        close code must be one of the instance's Resolution code choices: the Table API stores
        any string, the form would show an unknown one as it is."""
        if not resolution.strip() or not notes.strip():
            raise ValueError("a ServiceNow resolution needs a close code and close notes")
        record = self._state(ticket)
        state = str(record.get("state") or "")
        if state in _STATUS:
            code = record.get("close_code") or "no close code"
            return TicketWrite(
                ticket=ticket,
                changed=False,
                status=_STATUS[state],
                detail=f"{ticket.key} is {_STATE_NAMES[state]} already ({code}): nothing written",
            )
        response = send(
            self._http,
            SYSTEM,
            f"resolution of {ticket.key}",
            "PATCH",
            f"{self.TABLE}/{ticket.id}",
            json={
                "state": RESOLVED,
                "close_code": plain_text(resolution),
                "close_notes": plain_text(notes),
            },
            params={"sysparm_fields": "sys_id,state"},
        )
        self._expect_state(ticket, response.json().get("result"), RESOLVED, "resolved")
        return TicketWrite(
            ticket=ticket,
            changed=True,
            status="resolved",
            detail=f"{ticket.key} resolved ({resolution})",
        )

    def reopen(self, ticket: Ticket, notes: str) -> TicketWrite:
        """A Resolved incident back to In Progress, ``notes`` as a work note (the instance
        clears the resolution and counts the reopen). A closed or canceled incident cannot be
        reopened: nothing is written."""
        record = self._state(ticket)
        state = str(record.get("state") or "")
        if state != RESOLVED:
            name = _STATE_NAMES.get(state, state or "unknown")
            why = "cannot be reopened" if state in _STATUS else "is open already"
            return TicketWrite(
                ticket=ticket,
                changed=False,
                status=_STATUS.get(state, "open"),
                detail=f"{ticket.key} is {name}: {why}",
            )
        body = {"state": IN_PROGRESS}
        if notes.strip():
            body["work_notes"] = plain_text(notes)
        response = send(
            self._http,
            SYSTEM,
            f"reopening of {ticket.key}",
            "PATCH",
            f"{self.TABLE}/{ticket.id}",
            json=body,
            params={"sysparm_fields": "sys_id,state"},
            # With a work note, a repeat would add it twice: a lost answer is left to the
            # caller, whose next call finds the incident open and writes nothing.
            extensions={IDEMPOTENT: "work_notes" not in body},
        )
        self._expect_state(ticket, response.json().get("result"), IN_PROGRESS, "reopened")
        return TicketWrite(
            ticket=ticket, changed=True, status="open", detail=f"{ticket.key} reopened"
        )

    def _expect_state(self, ticket: Ticket, result: Any, state: str, what: str) -> None:
        # A field the user may not write is dropped with a 200: the answer says what was kept.
        got = str(result.get("state") or "") if isinstance(result, dict) else ""
        if got != state:
            raise ServiceRejectedError(
                SYSTEM,
                f"{ticket.key} was not {what}: the instance kept state "
                f"{_STATE_NAMES.get(got, got or 'unknown')} (check the user's roles)",
            )
