"""Jira Cloud credentials and a REST v3 client that finds or creates issues by label.

Long because the client is one whole `TicketingClient`: lookups that work around a lagging
search, creation and comments, and the two-way sync, whose resolve and reopen go through the
workflow's own transitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import Field, SecretStr

from riposte.alerts.adf import to_adf
from riposte.alerts.response import Priority, Ticket, TicketDraft
from riposte.blocks._http import build_http_client, send
from riposte.blocks._pool import pooled
from riposte.blocks.errors import ServiceNotFoundError, ServiceRejectedError
from riposte.blocks.ticketing import (
    CORRELATION_PREFIX,
    GROUP_LOOKUP_LIMIT,
    RIPOSTE_LABEL,
    GroupedTicket,
    TicketChange,
    TicketingClient,
    TicketingCredentials,
    TicketStatus,
    TicketWrite,
    in_group,
)

SYSTEM = "Jira"

_PRIORITY_NAMES = {
    Priority.CRITICAL: "Highest",
    Priority.HIGH: "High",
    Priority.MEDIUM: "Medium",
    Priority.LOW: "Low",
}
# What a sync reads of a changed issue.
_CHANGE_FIELDS = "labels,status,resolution,resolutiondate,updated,creator"
_MAX_PAGES = 1000  # a bound on any paged read, against a service that never says "last"


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def jql_date(moment: datetime, time_zone: str) -> str:
    """``moment`` as a JQL date literal (``yyyy-MM-dd HH:mm``) that Jira reads as an instant at
    or before it: Jira reads the literal in the time zone of the account that searches, and to
    the minute, so the window it opens starts up to a minute (an hour, on a wall time that a
    change of clocks repeats) early; the caller filters the overlap out."""
    zone = _zone(time_zone)
    local = moment.astimezone(zone)
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        local = (moment - timedelta(hours=1)).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M}"


def jira_timestamp(text: Any) -> datetime | None:
    """A Jira timestamp (``2026-12-06T13:00:00.000+0100``) in UTC, or None."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)
    except ValueError:
        return None


def _category(issue_fields: dict[str, Any]) -> tuple[str, str]:
    """The status's category key (new, indeterminate, done) and the status's name."""
    status = issue_fields.get("status") or {}
    category = (status.get("statusCategory") or {}).get("key") if isinstance(status, dict) else None
    name = status.get("name") if isinstance(status, dict) else None
    return str(category or ""), str(name or "")


def _target(transition: dict[str, Any]) -> tuple[str, str]:
    """The category key and name of the status a transition goes to."""
    return _category({"status": transition.get("to")})


def _status(category: str, name: str) -> TicketStatus:
    if category != "done":
        return "open"
    return "closed" if name.lower() == "closed" else "resolved"


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
        self._myself: dict[str, str] | None = None
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
        return [text for _, text in self._comments(ticket)]

    def own_notes(self, ticket: Ticket) -> list[str]:
        """The comments the credentials' own account wrote, oldest first."""
        me = self.myself().get("accountId")
        return [text for author, text in self._comments(ticket) if me and author == me]

    def _comments(self, ticket: Ticket) -> list[tuple[str, str]]:
        """(author's accountId, text) of every comment, oldest first."""
        texts: list[tuple[str, str]] = []
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
            texts.extend(
                (_author_id(c.get("author")), adf_text(c.get("body")))
                for c in page
                if isinstance(c, dict)
            )
            if not page or len(texts) >= int(body.get("total") or 0):
                return texts

    # --- two-way sync -------------------------------------------------------------------------

    def _read(self, key: str, fields: str) -> dict[str, Any]:
        response = send(
            self._http,
            SYSTEM,
            f"read of {key}",
            "GET",
            f"/rest/api/3/issue/{quote(key, safe='')}",
            params={"fields": fields},
        )
        issue = response.json()
        return issue if isinstance(issue, dict) else {}

    def description(self, ticket: Ticket) -> str:
        return adf_text(
            (self._read(ticket.key, "description").get("fields") or {}).get("description")
        )

    def status(self, ticket: Ticket) -> TicketStatus:
        return _status(*self._status_of(ticket))

    def correlation_key(self, ticket: Ticket) -> str:
        """The longest of the issue's labels under Riposte's prefix: a throttle slot's key is
        longer than its group's, which the issue also carries."""
        labels = (self._read(ticket.key, "labels").get("fields") or {}).get("labels") or []
        keys = sorted((str(x) for x in labels if str(x).startswith(CORRELATION_PREFIX)), key=len)
        return keys[-1] if keys else ""

    def by_key(self, key: str) -> Ticket | None:
        try:
            issue = self._read(key, "labels")
        except ServiceNotFoundError:
            return None
        return self._ticket(issue, created=False) if issue.get("key") else None

    def myself(self, *, refresh: bool = False) -> dict[str, str]:
        """The credentials' account: ``accountId`` (the author of Riposte's own changes) and
        ``timeZone`` (the zone JQL date literals are read in, which its owner may change: a
        search by date reads it again with ``refresh``)."""
        if self._myself is None or refresh:
            body = send(self._http, SYSTEM, "account lookup", "GET", "/rest/api/3/myself").json()
            self._myself = {
                "accountId": str(body.get("accountId") or ""),
                "timeZone": str(body.get("timeZone") or "UTC"),
            }
        return self._myself

    def changed_since(
        self, since: datetime, project: str | None = None, *, page_size: int = 100
    ) -> list[TicketChange]:
        """Issues labelled `riposte` (in ``project``, else in every project) updated at or after
        ``since``, oldest update first, with who made each one's last change (its changelog's
        last history or its last comment, whichever is later).

        JQL dates are minutes in the account's time zone, so the search opens the window a
        little early and the overlap is dropped here. Search is eventually consistent: a change
        of the last few seconds may not be found yet, so a caller's next `since` should reach a
        little back before the latest change it saw.
        """
        if since.tzinfo is None:
            raise ValueError("since must carry a time zone")
        me = self.myself(refresh=True)
        since = since.replace(microsecond=since.microsecond // 1000 * 1000)  # Jira keeps ms
        clauses = [f'project = "{project}"'] if project else []
        clauses += [
            f'labels = "{RIPOSTE_LABEL}"',
            f'updated >= "{jql_date(since, me["timeZone"])}"',
        ]
        jql = " AND ".join(clauses) + " ORDER BY updated ASC"
        found: dict[str, TicketChange] = {}
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params = [("jql", jql), ("fields", _CHANGE_FIELDS), ("maxResults", str(page_size))]
            if token:
                params.append(("nextPageToken", token))
            body = send(
                self._http,
                SYSTEM,
                "changed issues search",
                "GET",
                "/rest/api/3/search/jql",
                params=params,
            ).json()
            for issue in body.get("issues") or []:
                change = self._change(issue, since, me["accountId"])
                if change is not None:
                    found[change.ticket.id] = change
            token = body.get("nextPageToken")  # absent, not null, on the last page
            if not token:
                break
        return sorted(found.values(), key=lambda c: (c.updated_at, c.ticket.key))

    def _change(self, issue: Any, since: datetime, me: str) -> TicketChange | None:
        if not isinstance(issue, dict) or not issue.get("key"):
            return None
        fields = issue.get("fields") or {}
        labels = [str(label) for label in fields.get("labels") or []]
        keys = sorted((label for label in labels if label.startswith(CORRELATION_PREFIX)), key=len)
        updated_at = jira_timestamp(fields.get("updated"))
        if RIPOSTE_LABEL not in labels or not keys or updated_at is None or updated_at < since:
            return None
        key = str(issue["key"])
        histories = self._changelog(key)
        resolution = (fields.get("resolution") or {}).get("name")
        resolved_by = None
        if resolution:
            for history in reversed(histories):
                if any(
                    item.get("field") == "resolution" and item.get("to")
                    for item in history.get("items") or []
                ):
                    resolved_by = _account(history.get("author"))
                    break
        # The last change: the later of the last history and the last comment.
        events = [(jira_timestamp(h.get("created")), _account(h.get("author"))) for h in histories]
        comment = self._last_comment(key)
        if comment is not None:
            events.append(
                (
                    jira_timestamp(comment.get("updated")),
                    _account(comment.get("updateAuthor") or comment.get("author")),
                )
            )
        dated = [(when, who) for when, who in events if when is not None and who]
        updated_by = max(dated, key=lambda e: e[0])[1] if dated else _account(fields.get("creator"))
        category, name = _category(fields)
        return TicketChange(
            ticket=self._ticket(issue, created=False),
            correlation_key=keys[-1],  # the longest: a throttle slot's key is under its group's
            status=_status(category, name),
            resolution=str(resolution) if resolution else None,
            resolution_notes=None,
            updated_at=updated_at,
            updated_by=updated_by or "",
            resolved_by=resolved_by,
            by_riposte=bool(me) and updated_by == me,
        )

    def _changelog(self, key: str) -> list[dict[str, Any]]:
        """Every history of the issue, oldest first (pages of 100)."""
        histories: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            body = send(
                self._http,
                SYSTEM,
                f"changelog of {key}",
                "GET",
                f"/rest/api/3/issue/{quote(key, safe='')}/changelog",
                params={"startAt": str(len(histories)), "maxResults": "100"},
            ).json()
            page = [h for h in body.get("values") or [] if isinstance(h, dict)]
            histories.extend(page)
            if not page or body.get("isLast", True):
                break
        return histories

    def _last_comment(self, key: str) -> dict[str, Any] | None:
        body = send(
            self._http,
            SYSTEM,
            f"last comment of {key}",
            "GET",
            f"/rest/api/3/issue/{quote(key, safe='')}/comment",
            params={"orderBy": "-created", "maxResults": "1"},
        ).json()
        comments = [c for c in body.get("comments") or [] if isinstance(c, dict)]
        return comments[0] if comments else None

    def _status_of(self, ticket: Ticket) -> tuple[str, str]:
        return _category(self._read(ticket.key, "status,resolution").get("fields") or {})

    def _transitions(self, ticket: Ticket) -> list[dict[str, Any]]:
        """The transitions of the issue's workflow from its status, with their screens' fields
        (transition ids are the workflow's own: never assumed)."""
        body = send(
            self._http,
            SYSTEM,
            f"transitions of {ticket.key}",
            "GET",
            f"/rest/api/3/issue/{quote(ticket.key, safe='')}/transitions",
            params={"expand": "transitions.fields"},
        ).json()
        return [t for t in body.get("transitions") or [] if isinstance(t, dict) and t.get("id")]

    def _transition(self, ticket: Ticket, body: dict[str, Any], notes: str) -> None:
        if notes.strip():
            body["update"] = {"comment": [{"add": {"body": to_adf(notes)}}]}
        send(
            self._http,
            SYSTEM,
            f"transition of {ticket.key}",
            "POST",
            f"/rest/api/3/issue/{quote(ticket.key, safe='')}/transitions",
            json=body,
        )

    def resolve(self, ticket: Ticket, resolution: str, notes: str) -> TicketWrite:
        """The workflow's transition to a Done-category status (one whose screen takes a
        resolution first, and a status other than Closed), with ``resolution`` (a resolution
        name the screen offers) and ``notes`` as a comment of the same transition."""
        category, name = self._status_of(ticket)
        if category == "done":
            return TicketWrite(
                ticket=ticket,
                changed=False,
                status=_status(category, name),
                detail=f"{ticket.key} is {name} already: nothing written",
            )
        done = [t for t in self._transitions(ticket) if _target(t)[0] == "done"]
        if not done:
            raise ServiceRejectedError(
                SYSTEM, f"{ticket.key}: its workflow has no transition to a Done status from {name}"
            )
        done.sort(
            key=lambda t: (
                "resolution" not in (t.get("fields") or {}),
                _target(t)[1].lower() == "closed",
            )
        )
        chosen = done[0]
        target = _target(chosen)[1]
        body: dict[str, Any] = {"transition": {"id": str(chosen["id"])}}
        screen = (chosen.get("fields") or {}).get("resolution")
        if isinstance(screen, dict):
            offered = [
                str(v.get("name")) for v in screen.get("allowedValues") or [] if isinstance(v, dict)
            ]
            named = next((o for o in offered if o.lower() == resolution.strip().lower()), None)
            if named is None:
                raise ServiceRejectedError(
                    SYSTEM,
                    f"{ticket.key}: resolution {resolution!r} is not offered by the transition"
                    f" to {target} (offered: {', '.join(offered) or 'none'})",
                )
            body["fields"] = {"resolution": {"name": named}}
            how = f"resolution {named}"
        else:
            how = "the resolution its workflow sets"
        self._transition(ticket, body, notes)
        return TicketWrite(
            ticket=ticket,
            changed=True,
            status=_status("done", target),
            detail=f"{ticket.key} moved to {target} with {how}",
        )

    def reopen(self, ticket: Ticket, notes: str) -> TicketWrite:
        """The workflow's transition out of the Done category (to an In Progress status first,
        else a To Do one), ``notes`` as its comment."""
        category, name = self._status_of(ticket)
        if category != "done":
            return TicketWrite(
                ticket=ticket,
                changed=False,
                status="open",
                detail=f"{ticket.key} is {name}: open already, nothing written",
            )
        back = [t for t in self._transitions(ticket) if _target(t)[0] != "done"]
        if not back:
            return TicketWrite(
                ticket=ticket,
                changed=False,
                status=_status(category, name),
                detail=f"{ticket.key} is {name}: its workflow has no transition out of it",
            )
        back.sort(key=lambda t: _target(t)[0] != "indeterminate")
        chosen = back[0]
        target = _target(chosen)[1]
        self._transition(ticket, {"transition": {"id": str(chosen["id"])}}, notes)
        return TicketWrite(
            ticket=ticket, changed=True, status="open", detail=f"{ticket.key} moved to {target}"
        )


def _account(user: Any) -> str:
    return str(user.get("accountId") or "") if isinstance(user, dict) else ""


def _author_id(author: Any) -> str:
    """A comment's author: an object with its accountId (the sandbox may give the id alone)."""
    if isinstance(author, dict):
        return str(author.get("accountId") or "")
    return str(author or "")


def adf_text(node: Any) -> str:
    """The text of an Atlassian Document Format node, paragraphs on their own lines."""
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text") or "")
    if node.get("type") == "hardBreak":
        return "\n"
    parts = [adf_text(child) for child in node.get("content") or []]
    # A document's blocks are paragraphs apart (a blank line, as in the text that `to_adf`
    # made them from): the trailing marker paragraph of a note reads back as one.
    kind = node.get("type")
    separator = "\n\n" if kind == "doc" else "\n" if kind in ("bulletList", "orderedList") else ""
    return separator.join(parts)
