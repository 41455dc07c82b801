"""The steps of the ticket sync (`riposte.flows.sync`): read changed tickets, read what a ticket
records, resolve or reopen an alert, add a note once, resolve a ticket. Each is a task run with
the retries of every external call; each write compares first, so repeating one changes
nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import BaseModel, ConfigDict

from riposte.alerts.incidents import IncidentUpdate
from riposte.alerts.model import Alert
from riposte.alerts.plain import code_span, log_text
from riposte.alerts.response import Ticket
from riposte.alerts.sources.lifecycle import alert_state as source_state
from riposte.alerts.sync import (
    SYNC_MARKER,
    AlertState,
    SyncVerdict,
    alert_keys,
    parse_key,
    trailing_markers,
)
from riposte.blocks import DefenderCredentials, TicketingCredentials
from riposte.blocks.ticketing import TicketChange
from riposte.settings import RESPONSE_TAG
from riposte.tasks._common import external_call
from riposte.tasks.incidents import update_incident
from riposte.tasks.tickets import ticket_system


class AlertWrite(BaseModel):
    """An alert's state before and after a sync write, and what its API could not do."""

    model_config = ConfigDict(frozen=True)

    before: AlertState
    after: AlertState
    unsupported: tuple[str, ...] = ()


class TicketChangeView(TicketChange):
    """A changed ticket as the sync reads it: open, or done (resolved or closed)."""

    @property
    def phase(self) -> Literal["open", "done"]:
        return "open" if self.status == "open" else "done"


class TicketTexts(BaseModel):
    """What a ticket records, as the sync trusts it: its description, the notes Riposte's own
    account wrote (oldest first), its key, and whether it is open now."""

    model_config = ConfigDict(frozen=True)

    description: str
    notes: list[str]
    correlation_key: str
    phase: Literal["open", "done"]

    @property
    def alert_keys(self) -> list[str]:
        """The alerts on the ticket: its own alert first (a ticket opened before descriptions
        carried the opener's marker has it only as its key), then the others it records."""
        own = [self.correlation_key] if parse_key(self.correlation_key) else []
        return list(dict.fromkeys([*own, *alert_keys([self.description, *self.notes])]))


@external_call(name="changed tickets", cached=False)
def changed_tickets(ticketing: TicketingCredentials, since: datetime) -> list[TicketChangeView]:
    """The tickets Riposte opened that changed at or after ``since``, oldest change first."""
    changes = ticketing.get_client().changed_since(since)
    return [TicketChangeView.model_validate(c, from_attributes=True) for c in changes]


@external_call(name="read ticket {ticket.key}", cached=False)
def ticket_texts(ticketing: TicketingCredentials, ticket: Ticket) -> TicketTexts:
    client = ticketing.get_client()
    return TicketTexts(
        description=client.description(ticket),
        notes=client.own_notes(ticket),
        correlation_key=client.correlation_key(ticket),
        phase="open" if client.status(ticket) == "open" else "done",
    )


def note_ticket_once(
    ticketing: TicketingCredentials, ticket: Ticket, text: str, markers: list[str]
) -> bool:
    """Add ``text`` with ``markers`` as its last paragraph, unless a note ends with them
    already; False then."""
    return _note_once(ticketing, ticket, text, tuple(markers))


@external_call(name="sync note {ticket.key}", cached=False)
def _note_once(
    ticketing: TicketingCredentials, ticket: Ticket, text: str, markers: tuple[str, ...]
) -> bool:
    client = ticketing.get_client()
    # The same markers as the last sync note: this one was written (a repeat after a kill).
    # Only the last: the same state may come back later (resolved, reopened, resolved again).
    ours = [m for m in map(trailing_markers, client.own_notes(ticket)) if _is_sync(m)]
    if ours and ours[-1] == list(markers):
        return False
    client.add_note(ticket, text + "\n\n" + "\n".join(markers))
    return True


def _is_sync(markers: list[str]) -> bool:
    return any(m.startswith(SYNC_MARKER) for m in markers)


def _state(source: str, payload: dict[str, object]) -> AlertState:
    found = source_state(source, payload)
    return AlertState(
        status=found.status,
        classification=found.classification,
        determination=found.determination,
        assigned_to=found.assigned_to,
    )


@external_call(name="read {source}-{alert_id}", cached=False)
def read_alert_state(defender: DefenderCredentials, source: str, alert_id: str) -> AlertState:
    """The alert's state now (read again under the ticket's lock, not from a listing)."""
    return _state(source, defender.source_client(source).get(alert_id))


@external_call(name="resolve {source}-{alert_id}", cached=False)
def resolve_alert(
    defender: DefenderCredentials,
    source: str,
    alert_id: str,
    classification: str,
    determination: str,
    comment: str,
    marker: str,
) -> AlertWrite:
    """Resolve the alert with the verdict and ``comment`` (once: ``marker``), unless it is
    resolved already; its state before and after."""
    client = defender.source_client(source)
    before = _state(source, client.get(alert_id))
    if before.resolved:
        # Resolved already: by a person (whose verdict a ticket's close code must not
        # overwrite), or by this sync before a kill.
        return AlertWrite(before=before, after=before)
    done = client.resolve(alert_id, classification, determination, comment, marker)
    after = _state(source, client.get(alert_id))
    return AlertWrite(before=before, after=after, unsupported=tuple(done.unsupported))


@external_call(name="reopen {source}-{alert_id}", cached=False)
def reopen_alert(
    defender: DefenderCredentials, source: str, alert_id: str, comment: str, marker: str
) -> AlertWrite:
    """Put a resolved alert back in progress with ``comment`` (once: ``marker``)."""
    client = defender.source_client(source)
    before = _state(source, client.get(alert_id))
    if not before.resolved:
        return AlertWrite(before=before, after=before)
    done = client.reopen(alert_id, comment, marker)
    after = _state(source, client.get(alert_id))
    return AlertWrite(before=before, after=after, unsupported=tuple(done.unsupported))


def resolve_incident_of(
    defender: DefenderCredentials, key: str, verdict: SyncVerdict, comment: str
) -> str | None:
    """Resolve the Graph incident of the alert ``key`` with ``verdict`` (`update_incident`:
    each field written only where it differs, the comment once); its id, or None when the
    alert has none (or its API has no incidents)."""
    parsed = parse_key(key)
    if parsed is None or parsed[0] != "graph":
        return None
    incident_id = _incident_id(defender, parsed[1])
    if not incident_id:
        return None
    update_incident(
        defender,
        incident_id,
        IncidentUpdate(
            status="resolved",
            # "unknown" is no verdict: the incident keeps the one it has.
            classification=None if verdict.classification == "unknown" else verdict.classification,
            determination=None if verdict.determination == "unknown" else verdict.determination,
            comment=comment[:1000],
        ),
    )
    return incident_id


@external_call(name="incident of {alert_id}", cached=False)
def _incident_id(defender: DefenderCredentials, alert_id: str) -> str | None:
    found = defender.get_client().get_alert(alert_id).get("incidentId")
    return str(found) if found else None


@external_call(name="resolve ticket {ticket.key}", cached=False)
def resolve_ticket(
    ticketing: TicketingCredentials, ticket: Ticket, resolution: str, notes: str
) -> bool:
    """Resolve the ticket unless it is resolved already; whether it was written."""
    return ticketing.get_client().resolve(ticket, resolution, notes).changed


# Riposte's comment on an alert it filed a ticket for (`alert_comment.j2`).
_OPENED = re.compile(r"^Riposte opened (servicenow|jira) ticket (\S+): (\S+)$", re.MULTILINE)


def ticket_of_alert(
    systems: dict[str, TicketingCredentials], alert: Alert
) -> tuple[TicketingCredentials, Ticket] | None:
    """The ticket Riposte filed ``alert`` on: its own ticket (found by its key), else the one
    Riposte's comment on the alert names (an incident's or a throttled group's)."""
    for ticketing in systems.values():
        found = _find_ticket(ticketing, alert.correlation_key)
        if found is not None:
            return ticketing, found
    comments = alert.raw.get("comments") if isinstance(alert.raw, dict) else None
    for comment in comments if isinstance(comments, list) else []:
        text = str(comment.get("comment") or "") if isinstance(comment, dict) else ""
        match = _OPENED.search(text)
        if match is None:
            continue
        system, key = match.group(1), match.group(2)
        for ticketing in systems.values():
            if ticket_system(ticketing) != system:
                continue
            ticket = _ticket_by_key(ticketing, key)
            if ticket is not None:
                return ticketing, ticket
    return None


@external_call(name="find ticket {correlation_key}", cached=False)
def _find_ticket(ticketing: TicketingCredentials, correlation_key: str) -> Ticket | None:
    return ticketing.get_client().find(correlation_key)


@external_call(name="ticket {key}", cached=False)
def _ticket_by_key(ticketing: TicketingCredentials, key: str) -> Ticket | None:
    return ticketing.get_client().by_key(key)


def show_on_response(key: str, ticket: Ticket, state: str, alert: str) -> bool:
    """The ticket's state now, as an artifact (`ticket-<source>-<id>`) of the alert's latest
    response run (named `<source>-<id>`, tagged `response`), so the response's page shows it.
    False when there is no such run (a batch answered the alert); never raises: the sync is
    done whether or not its page says so."""
    parsed = parse_key(key)
    if parsed is None:
        return False
    source, alert_id = parsed
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[f"{source}-{alert_id}"]),
                    tags=FlowRunFilterTags(all_=[RESPONSE_TAG]),
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
            if not runs:
                return False
            name = re.sub(r"[^a-z0-9-]+", "-", f"ticket-{source}-{alert_id}".lower())
            client.create_artifact(
                ArtifactCreate(
                    key=re.sub(r"-{2,}", "-", name).strip("-")[:120],
                    type="markdown",
                    description=f"Ticket {ticket.key}: {state}"[:500],
                    data=_ticket_markdown(ticket, state, alert),
                    flow_run_id=runs[0].id,
                )
            )
        return True
    except Exception as exc:
        get_run_logger().warning(
            "The ticket's state was not shown on %s's response: %s", key, log_text(exc)
        )
        return False


def _ticket_markdown(ticket: Ticket, state: str, alert: str) -> str:
    url = ticket.url.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
    link = f"[{ticket.key}]({url})" if url.startswith(("https://", "http://")) else ticket.key
    return "\n".join(
        [
            f"# Ticket {code_span(ticket.key, 60)}: {code_span(state, 200)}",
            "",
            "| | |",
            "|---|---|",
            f"| ticket | {ticket.system} {link} |",
            f"| state | {code_span(state, 300, cell=True)} |",
            f"| alert | {code_span(alert, 300, cell=True)} |",
            f"| as of | {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC (ticket sync) |",
        ]
    )
