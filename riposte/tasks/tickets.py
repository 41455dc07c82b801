"""Tickets in ServiceNow or Jira: find-or-create one on a correlation key, or add an alert to one
as a numbered note, each exactly once."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict

from riposte.alerts.matching import PlannedAction
from riposte.alerts.messages import MessageRenderer
from riposte.alerts.model import Alert
from riposte.alerts.policy import Templates, TicketTarget
from riposte.alerts.response import Ticket, TicketDraft
from riposte.alerts.sync import ALERT_MARKER
from riposte.blocks._http import run_logger
from riposte.blocks.errors import OutcomeUnknownError, ServiceUnavailableError
from riposte.blocks.jira import JiraCredentials
from riposte.blocks.ticketing import TicketingCredentials
from riposte.settings import get_settings
from riposte.tasks._cache import cache_key, exclusive
from riposte.tasks._common import external_call
from riposte.tasks.ledgers import TicketRecords, block_identity

# Appended to every note Riposte adds to a ticket, on a line of its own, whatever the template
# says: it is how a repeated step finds its note, and how notes are counted.
NOTE_MARKER = ALERT_MARKER


def note_marker(alert: Alert) -> str:
    return f"{NOTE_MARKER} {alert.correlation_key}"


# --- where an action's ticket goes ------------------------------------------------------------


def ticketing_block_name(target: TicketTarget | None, override: str | None) -> str | None:
    """The block an action files its ticket with: the run's override, else the block for the
    policy's ticket system (settings ``servicenow_block`` / ``jira_block``)."""
    if target is None:
        return None
    if override:
        return override
    settings = get_settings()
    return settings.jira_block if target.system == "jira" else settings.servicenow_block


def ticket_system(ticketing: TicketingCredentials) -> str:
    return "jira" if isinstance(ticketing, JiraCredentials) else "servicenow"


def ticket_place(target: TicketTarget | None, ticketing: TicketingCredentials) -> dict[str, Any]:
    """The queue (ServiceNow) or project (Jira) the policy names, for the block's system only:
    a run that overrides the ticketing system keeps that system's defaults."""
    if target is None:
        return {"queue": None, "project": None}
    jira = ticket_system(ticketing) == "jira"
    return {
        "queue": None if jira else target.queue,
        "project": target.project if jira else None,
    }


class OpenedTicket(BaseModel):
    """The ticket an alert's response found or created, and which alert's response did it."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    correlation_key: str
    opened_by: str
    """Correlation key of the alert whose response opened it; empty when it was found already
    there under a group key (so some other alert opened it)."""


class TicketComment(BaseModel):
    """An alert added to an existing ticket as a note: the n-th alert on that ticket."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    alert_number: int
    added: bool
    """False when the note was already there (a repeated step)."""


def _ticket_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    # Keyed by the ticket, not the alert: every alert whose decision names this ticket key takes
    # turns on one lock, so two workers deciding at once share one ticket.
    return cache_key("ticket", params["correlation_key"], block_identity(params["ticketing"]))


@external_call(_ticket_key, name="ticket {alert.source}-{alert.id}")
def open_ticket(
    ticketing: TicketingCredentials,
    alert: Alert,
    action: PlannedAction,
    correlation_key: str,
    group_key: str | None = None,
) -> OpenedTicket:
    """The ticket keyed ``correlation_key``: found, or created from the action's templates with
    its priority and queue (ServiceNow) or project (Jira).

    Example:
        ```python
        opened = open_ticket(ticketing, alert, action, outcome.ticket_correlation_key)
        ```
    """
    system = ticket_system(ticketing)
    renderer = MessageRenderer(action.templates, get_settings().templates_dir)
    draft = renderer.ticket_draft(
        alert, action.route(), system=system, correlation_key=correlation_key
    ).model_copy(update={**ticket_place(action.ticket, ticketing), "group_key": group_key})
    ticket = _find_or_create(ticketing, draft, correlation_key, group_key, alert.correlation_key)
    own = ticket.created or correlation_key == alert.correlation_key
    return OpenedTicket(
        ticket=ticket,
        correlation_key=correlation_key,
        opened_by=alert.correlation_key if own else "",
    )


def _find_or_create(
    ticketing: TicketingCredentials,
    draft: TicketDraft,
    correlation_key: str,
    group_key: str | None,
    opener: str = "",
) -> Ticket:
    """Find-or-create that stays exactly-once when the system's search lags behind its writes:
    a ticket this step created before (a retry, a re-run after a kill, another worker) is in
    `TicketRecords`, and its id makes the search see them; a create whose answer was lost is
    found by reading what was created since it (`created_since`). ``opener`` is the key of the
    alert whose step this is: a ticket its own earlier attempt created comes back `created`."""
    client = ticketing.get_client()
    if not client.search_lags:  # its search reads what was written: nothing to record
        return client.find_or_create(draft)
    records = TicketRecords(block_identity(ticketing))
    held, held_by = records.held(correlation_key, group_key)
    pending = records.pending(correlation_key, group_key)
    recent = [held.id] if held is not None else []
    found = client.find(correlation_key, project=draft.project, recent=recent)
    if found is None and pending is not None:
        # A create sent before and never recorded (its answer lost, or its process killed) may
        # have made the ticket, which the search may not show yet: read what was made since.
        found = client.created_since(correlation_key, pending[0], project=draft.project)
    if found is not None:
        if held is not None and held.id == found.id:
            by = held_by
        elif pending is not None:  # made by the create the mark announced
            by = pending[1]
            records.put(correlation_key, group_key, found, by=by)
        else:
            by = ""
        if pending is not None:
            _forget_pending(records, correlation_key, group_key)
        return found.model_copy(update={"created": bool(opener) and by == opener})
    # A fresh mark for this create: the floor under anything it makes, and whose step it is.
    floor = client.creation_floor(draft.project)
    if floor is not None:
        records.mark_pending(correlation_key, group_key, floor, by=opener)
    try:
        created = client.create(draft)
    except (OutcomeUnknownError, ServiceUnavailableError) as exc:
        # Sent, and no answer that says it failed: the system may have made it.
        ambiguous = isinstance(exc, OutcomeUnknownError) or (exc.status_code or 0) >= 500
        if floor is None or not ambiguous:
            _forget_pending(records, correlation_key, group_key)
            raise
        found = client.created_since(correlation_key, floor, project=draft.project)
        if found is None:
            raise  # the mark stays: the next attempt reads from its floor again
        created = found.model_copy(update={"created": True})  # it is the one this create made
    except Exception:
        _forget_pending(records, correlation_key, group_key)  # refused: nothing was made
        raise
    records.put(correlation_key, group_key, created, by=opener)
    _forget_pending(records, correlation_key, group_key)
    return created


def _forget_pending(records: TicketRecords, correlation_key: str, group_key: str | None) -> None:
    # The ticket is recorded: a mark left behind changes nothing (a find sees the record first).
    try:
        records.clear_pending(correlation_key, group_key)
    except Exception as exc:  # never worth failing the step (and demoting its ticket)
        run_logger().warning("could not clear the pending create mark: %s", type(exc).__name__)


def _comment_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    ticket: Ticket = params["ticket"]
    return cache_key(
        "comment", alert.correlation_key, ticket.key, block_identity(params["ticketing"])
    )


@external_call(_comment_key, name="comment {alert.source}-{alert.id}")
def comment_on_ticket(
    ticketing: TicketingCredentials,
    alert: Alert,
    ticket: Ticket,
    reason: str,
    templates: Templates | None = None,
) -> TicketComment:
    """Add ``alert`` to an open ticket as a note saying it is the n-th alert there, once.

    The notes are read and numbered under a lock on the ticket, so that concurrent alerts get
    consecutive numbers; a note already carrying this alert's key is not written again.

    Example:
        ```python
        comment_on_ticket(ticketing, alert, ticket, "throttled: 1 ticket already opened")
        ```
    """
    client = ticketing.get_client()
    marker = note_marker(alert)
    with exclusive(cache_key("notes", block_identity(ticketing), ticket.key)):
        ours = [n for n in client.notes(ticket) if NOTE_MARKER in n]
        for index, note in enumerate(ours):
            if marker in (line.strip() for line in note.splitlines()):
                return TicketComment(ticket=ticket, alert_number=index + 2, added=False)
        # The alert that opened the ticket is alert 1; each note adds one.
        number = len(ours) + 2
        text = MessageRenderer(templates, get_settings().templates_dir).ticket_note(
            alert,
            system=ticket_system(ticketing),
            ticket_key=ticket.key,
            alert_number=number,
            reason=reason,
        )
        client.add_note(ticket, f"{text}\n\n{marker}")
    return TicketComment(ticket=ticket, alert_number=number, added=True)


# Marks a playbook's own note (`add_note`): not an alert note, so it is not counted as one.
PLAYBOOK_NOTE_MARKER = "Riposte note key:"


def _note_digest(alert: Alert, text: str) -> str:
    return hashlib.sha256(f"{alert.correlation_key}\n{text}".encode()).hexdigest()[:24]


def _note_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    ticket: Ticket = params["ticket"]
    return cache_key(
        "note",
        _note_digest(alert, params["text"]),
        ticket.key,
        block_identity(params["ticketing"]),
    )


@external_call(_note_key, name="note {alert.source}-{alert.id} {ticket.key}")
def add_note(ticketing: TicketingCredentials, alert: Alert, ticket: Ticket, text: str) -> bool:
    """Add a playbook's ``text`` to ``ticket`` once; False when that note is there already.

    Example:
        ```python
        add_note(ticketing, alert, ticket, "The source IP is a partner's: not blocked")
        ```
    """
    client = ticketing.get_client()
    marker = f"{PLAYBOOK_NOTE_MARKER} {_note_digest(alert, text)}"
    with exclusive(cache_key("notes", block_identity(ticketing), ticket.key)):
        if any(marker in note for note in client.notes(ticket)):
            return False
        client.add_note(ticket, f"{text}\n\n{marker}")
    return True
