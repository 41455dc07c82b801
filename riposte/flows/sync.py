"""The scheduled `sync_tickets` flow: one lifecycle for an alert and its ticket.

Per ticketing system, the tickets that Riposte opened and that changed since the watermark:
a ticket resolved or closed resolves every alert recorded on it (the one that opened it and
each one added as a note) with the verdict the policy's `sync:` maps its close code or
resolution to, and a comment naming the ticket and who closed it; a ticket reopened puts them
back in progress. Per source, the alerts that changed since the watermark: a person's change
(resolved, reopened, reassigned, reclassified) becomes one note on the alert's ticket, and,
when the policy says `close_ticket_when_alerts: all_resolved`, the ticket is resolved once
every alert on it is.

Nothing is echoed back and nothing is done twice: what the sync applied is recorded on the
ticket itself, in marker lines of the note it writes once the alerts were written
(`riposte.alerts.sync`), and every write compares first. A watermark (a Prefect Variable) moves
only after every change it covers was applied: a run that fails, is killed or meets a system
that is down leaves it, and the next run applies what is missing.

Over 500 lines: the two directions share the ticket's lock, its markers, the rows and the
watermarks, and each is checked against the other (a ticket's change before its alerts').
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from riposte.alerts.matching import evaluate
from riposte.alerts.model import Alert
from riposte.alerts.policy import Policy
from riposte.alerts.response import Ticket
from riposte.alerts.sources import parse_alert
from riposte.alerts.sync import (
    SYNC_MARKER,
    AlertState,
    SyncPolicy,
    SyncVerdict,
    digest,
    last_ticket_marker,
    parse_key,
    recorded_alert_states,
    ticket_marker,
    ticket_state_marker,
)
from riposte.blocks import DefenderCredentials, TicketingCredentials, load_block
from riposte.blocks.errors import ServiceAuthError, ServiceNotFoundError, ServiceRejectedError
from riposte.playbooks.context import DEFAULT_DEFENDER
from riposte.settings import get_settings
from riposte.tasks._cache import cache_key, exclusive
from riposte.tasks.decide import current_policy
from riposte.tasks.ledgers import block_identity
from riposte.tasks.runs import advance_watermark, read_watermark
from riposte.tasks.sync import (
    AlertWrite,
    TicketChangeView,
    TicketTexts,
    changed_tickets,
    note_ticket_once,
    read_alert_state,
    reopen_alert,
    resolve_alert,
    resolve_incident_of,
    resolve_ticket,
    show_on_response,
    ticket_of_alert,
    ticket_texts,
)

# Read again on every run: how far behind the watermark each read starts. Jira's JQL compares
# to the minute, searches lag behind writes, clocks differ; a change read twice is applied once.
OVERLAP = timedelta(minutes=5)
# What a write may meet that no later run would change: reported on the ticket, not retried.
PERMANENT = (ServiceAuthError, ServiceNotFoundError, ServiceRejectedError)

T = TypeVar("T")


class SyncRow(BaseModel):
    ticket: str
    alert: str
    change: str
    from_: str
    to: str


class SyncSummary(BaseModel):
    tickets_read: int = 0
    alerts_read: int = 0
    changes: list[SyncRow] = []
    failures: list[str] = []
    failed_tickets: list[str] = []
    """Tickets whose state this run could not apply: changes of their alerts wait for it."""


class Pending(Exception):
    """An alert's change waits for its ticket's own change, which a run has still to apply."""


@flow(name="sync_tickets", flow_run_name="sync", log_prints=False)
def sync_tickets(
    defender_block: str = DEFAULT_DEFENDER,
    lookback_minutes: int = 24 * 60,
) -> SyncSummary:
    """Bring alerts and their tickets to one state: a ticket resolved or reopened by a person
    resolves or reopens its alerts in Defender; an alert resolved, reopened, reassigned or
    reclassified by a person in Defender adds one note to its ticket (and, if the policy says
    so, resolves the ticket once all its alerts are). Safe to run twice at once, to retry and
    to kill: every change is applied once.

    Args:
        defender_block: The Defender credentials block that reads and writes the alerts.
        lookback_minutes: On the very first run (no watermark yet), how far back to read
            tickets and alerts, in minutes; later runs start at their watermarks.
    """
    logger = get_run_logger()
    whole = current_policy(logger).policy
    policy = whole.sync
    summary = SyncSummary()
    if not policy.enabled:
        logger.info("The policy's sync is off (sync: {enabled: false}): nothing changed")
        return summary
    settings = get_settings()
    defender = load_block(DefenderCredentials, defender_block)
    lookback = timedelta(minutes=lookback_minutes)
    systems: dict[str, TicketingCredentials] = {}
    for name in dict.fromkeys((settings.servicenow_block, settings.jira_block)):
        try:
            systems[name] = load_block(TicketingCredentials, name)
        except ValueError:
            continue  # a ticketing system this installation does not use
    for name, ticketing in systems.items():
        _sync_tickets_of(name, ticketing, defender, policy, lookback, summary)
    for source in settings.poll_source_list:
        _sync_alerts_of(source, defender, systems, whole, lookback, summary)
    rows = [
        {"ticket": r.ticket, "alert": r.alert, "change": r.change, "from": r.from_, "to": r.to}
        for r in summary.changes
    ]
    create_table_artifact(
        table=rows
        or [{"ticket": "", "alert": "", "change": "nothing changed", "from": "", "to": ""}],
        key="sync-tickets",
        description=f"Ticket sync: {len(rows)} changes, {len(summary.failures)} failures",
    )
    logger.info(
        "%d tickets and %d alerts read; %d changes applied",
        summary.tickets_read,
        summary.alerts_read,
        len(rows),
    )
    if summary.failures:
        raise RuntimeError(
            f"{len(summary.failures)} changes not applied yet (the next run applies them): "
            + "; ".join(summary.failures[:10])
        )
    return summary


# --- tickets -> alerts -------------------------------------------------------------------------


def _sync_tickets_of(
    name: str,
    ticketing: TicketingCredentials,
    defender: DefenderCredentials,
    policy: SyncPolicy,
    lookback: timedelta,
    summary: SyncSummary,
) -> None:
    logger = get_run_logger()
    mark = f"sync-{name.replace('/', '-')}"
    changes = _read_changed(
        "tickets", name, mark, lookback, summary, lambda since: changed_tickets(ticketing, since)
    )
    if changes is None:
        return
    summary.tickets_read += len(changes)
    failed = False
    for change in changes:
        try:
            summary.changes += apply_ticket_change(ticketing, defender, policy, change)
        except Exception as exc:
            failed = True
            summary.failed_tickets.append(change.ticket.key)
            summary.failures.append(f"{change.ticket.key}: {exc}")
            logger.error("Ticket %s: not applied yet: %s", change.ticket.key, exc)
    if changes and not failed:
        # The system's own clock, not ours: a change it stamps a little late is still read.
        _advance(mark, max(c.updated_at for c in changes), summary)


def _read_changed(
    what: str,
    where: str,
    mark: str,
    lookback: timedelta,
    summary: SyncSummary,
    read: Callable[[datetime], list[T]],
) -> list[T] | None:
    """``read`` from the watermark ``mark`` (less the `OVERLAP`): the ``what`` of ``where``
    that changed since; None, the failure recorded, if they could not be read."""
    try:
        since = read_watermark(mark, lookback)
        return read(since - OVERLAP)
    except Exception as exc:
        summary.failures.append(f"{where}: reading changed {what} failed: {exc}")
        get_run_logger().error("Reading the %s of %s failed: %s", what, where, exc)
        return None


def _advance(mark: str, to: datetime, summary: SyncSummary) -> None:
    try:
        advance_watermark(mark, to)
    except Exception as exc:  # the next run reads the same window again: nothing lost
        summary.failures.append(f"watermark {mark} not moved: {exc}")


def apply_ticket_change(
    ticketing: TicketingCredentials,
    defender: DefenderCredentials,
    policy: SyncPolicy,
    change: TicketChangeView,
) -> list[SyncRow]:
    """Apply a ticket's state to the alerts on it, unless the sync applied this state already.
    Decided from what the ticket holds now, read under its lock: two runs at once apply it
    once, and a change newer than the listing waits for the run that lists it."""
    ticket = change.ticket
    with _ticket_lock(ticketing, ticket):
        texts = ticket_texts(ticketing, ticket)
        if texts.phase != change.phase:
            return []  # changed again since it was listed: the next run applies the newer state
        wanted = ticket_marker(change.phase, change.resolution if change.phase == "done" else None)
        last = last_ticket_marker(texts.notes)
        recorded = recorded_alert_states(texts.notes)
        keys = texts.alert_keys
        if change.phase == "open":
            if last is None or last.startswith(ticket_marker("open", None)):
                return []  # never resolved, or its reopening applied: nothing to undo
        elif last == wanted:
            # Applied; an alert noted on the ticket since (a late alert of its incident) is
            # resolved too, the others are left as people made them.
            keys = [k for k in keys if k not in recorded]
            if not keys:
                return []
        # The n-th state the sync applies to this ticket: the same for a repeat of this one
        # (its note is not written yet), another for the next.
        event = str(sum(1 for note in texts.notes if ticket_state_marker(note)))
        who = change.resolved_by or change.updated_by or "someone"
        mark = _comment_marker(ticket, wanted, event)
        if change.phase == "done":
            verdict, mapped = policy.verdict(ticket.system, change.resolution)
            unmapped = (
                "" if mapped else f" (no mapping for {change.resolution!r}: classification unknown)"
            )
            comment = (
                f"Resolved because {ticket.system} ticket {ticket.key} was "
                f"{change.status} by {who} with {change.resolution or 'no resolution'}: "
                f"{verdict.classification} / {verdict.determination}{unmapped}."
            )

            def write(source: str, alert_id: str) -> AlertWrite:
                return resolve_alert(
                    defender,
                    source,
                    alert_id,
                    verdict.classification,
                    verdict.determination,
                    f"{comment} {mark}",
                    mark,
                )

            words = ("alert resolved", "alert already resolved: left as it is")
            text = (
                f"Riposte resolved the alerts of this ticket in Defender as "
                f"{verdict.classification} / {verdict.determination}: it was {change.status} by "
                f"{who} with {change.resolution or 'no resolution'}{unmapped}."
            )
        else:
            comment = (
                f"Back in progress because {ticket.system} ticket {ticket.key} was reopened "
                f"by {change.updated_by or 'someone'}."
            )

            def write(source: str, alert_id: str) -> AlertWrite:
                return reopen_alert(defender, source, alert_id, f"{comment} {mark}", mark)

            words = ("alert reopened", "alert already in progress")
            text = (
                f"Riposte put the alerts of this ticket back in progress in Defender: it was "
                f"reopened by {change.updated_by or 'someone'}."
            )
        rows: list[SyncRow] = []
        states: list[str] = []
        for key in keys:
            row, state = _apply_one(key, ticket, write, words)
            rows.append(row)
            if state is not None:
                states.append(state.marker(key))
        if change.phase == "done" and policy.resolve_incident:
            rows += _resolve_incidents(defender, keys, ticket, verdict, comment)
        problems = [r for r in rows if r.change.startswith("NOT")]
        if problems:
            text += " Not done: " + "; ".join(f"{r.alert}: {r.to}" for r in problems) + "."
        # Written last: until it is there, the next run applies this state again (each write
        # compares first), so a run killed half-way loses nothing and repeats nothing.
        note_ticket_once(ticketing, ticket, text, [wanted, *states])
    status = f"{change.status} by {who}"
    if change.phase == "done":
        status += f" with {change.resolution or 'no resolution'}"
    for row in rows:
        if row.alert:
            show_on_response(row.alert, ticket, status, f"{row.change}: {row.to}")
    return rows


def _apply_one(
    key: str,
    ticket: Ticket,
    write: Callable[[str, str], AlertWrite],
    words: tuple[str, str],
) -> tuple[SyncRow, AlertState | None]:
    """One alert's write; a permanent refusal (the alert is gone, the API says no) is a row
    and a line of the ticket's note, not a reason to hold every other ticket back."""
    parsed = parse_key(key)
    if parsed is None:
        return _not_applied(ticket, key, "not an alert key"), None
    try:
        done = write(parsed[0], parsed[1])
    except PERMANENT as exc:
        return _not_applied(ticket, key, str(exc)[:300]), None
    changed = done.before != done.after
    change = words[0] if changed else words[1]
    if done.unsupported:
        change += " (" + "; ".join(done.unsupported) + ")"
    return (
        SyncRow(
            ticket=ticket.key,
            alert=key,
            change=change,
            from_=_words(done.before),
            to=_words(done.after),
        ),
        done.after,
    )


def _not_applied(ticket: Ticket, key: str, why: str) -> SyncRow:
    return SyncRow(ticket=ticket.key, alert=key, change="NOT applied", from_="", to=why)


def _resolve_incidents(
    defender: DefenderCredentials,
    keys: list[str],
    ticket: Ticket,
    verdict: SyncVerdict,
    comment: str,
) -> list[SyncRow]:
    rows = []
    for incident in dict.fromkeys(
        i for key in keys if (i := resolve_incident_of(defender, key, verdict, comment))
    ):
        rows.append(
            SyncRow(ticket=ticket.key, alert="", change="incident resolved", from_="", to=incident)
        )
    return rows


def _ticket_lock(ticketing: TicketingCredentials, ticket: Ticket) -> Any:
    """The ticket's sync lock. Short: a run killed while holding it delays that ticket by
    `sync_lock_hold_seconds`, and a run that waits in vain leaves it to the next."""
    hold = get_settings().sync_lock_hold_seconds
    return exclusive(
        cache_key("sync", block_identity(ticketing), ticket.key),
        wait_seconds=min(60.0, hold / 2),
        hold_seconds=hold,
    )


def _comment_marker(ticket: Ticket, wanted: str, event: str) -> str:
    """The mark of the comment one ticket event puts on an alert: the ticket, the state and
    its number, so a repeat finds it and a later resolution of the same kind does not."""
    return f"[{SYNC_MARKER} {ticket.key} {digest(wanted + event)}]"


def _words(state: AlertState) -> str:
    parts = [state.status or "?"]
    if state.classification:
        parts.append(f"{state.classification}/{state.determination or 'unknown'}")
    if state.assigned_to:
        parts.append(f"owner {state.assigned_to}")
    return ", ".join(parts)


# --- alerts -> tickets -------------------------------------------------------------------------


# The other direction of `_sync_tickets_of`, from another watermark; both read by `_read_changed`.
def _sync_alerts_of(
    source: str,
    defender: DefenderCredentials,
    systems: dict[str, TicketingCredentials],
    policy: Policy,
    lookback: timedelta,
    summary: SyncSummary,
) -> None:
    logger = get_run_logger()
    mark = f"sync-alerts-{source}"
    payloads = _read_changed(
        "alerts",
        source,
        mark,
        lookback,
        summary,
        lambda since: list(defender.source_client(source).list_updated_since(since)),
    )
    if payloads is None:
        return
    summary.alerts_read += len(payloads)
    failed = False
    newest: datetime | None = None
    for payload in payloads:
        try:
            alert = parse_alert(payload, source)
        except Exception as exc:  # one alert the parser refuses must not stop the others
            logger.warning("%s: an alert was not read: %s", source, exc)
            continue
        if alert.updated_at is not None and (newest is None or alert.updated_at > newest):
            newest = alert.updated_at
        try:
            summary.changes += apply_alert_change(defender, systems, policy, alert, summary)
        except Exception as exc:
            failed = True
            summary.failures.append(f"{alert.correlation_key}: {exc}")
            logger.error("Alert %s: not applied yet: %s", alert.correlation_key, exc)
    if newest is not None and not failed:
        _advance(mark, newest, summary)


def apply_alert_change(
    defender: DefenderCredentials,
    systems: dict[str, TicketingCredentials],
    policy: Policy,
    alert: Alert,
    summary: SyncSummary,
) -> list[SyncRow]:
    """A person's change of ``alert`` as one note on its ticket; the ticket resolved when the
    policy asks and every alert on it is resolved."""
    found = ticket_of_alert(systems, alert)
    if found is None:
        return []  # not an alert Riposte filed a ticket for
    ticketing, ticket = found
    key = alert.correlation_key
    with _ticket_lock(ticketing, ticket):
        texts = ticket_texts(ticketing, ticket)
        keys = texts.alert_keys
        if key not in keys:
            return []
        now = read_alert_state(defender, alert.source, alert.id)
        if texts.phase != _applied_phase(texts):
            if ticket.key in summary.failed_tickets:
                raise Pending(f"ticket {ticket.key}: its own change is not applied yet")
            if texts.phase == "done" and now.resolved:
                # The ticket's resolution, which the ticket pass applies and records (a ticket
                # resolved before the sync ran has no record): not a person's change to note.
                return []
        recorded = recorded_alert_states(texts.notes)
        before = recorded.get(key) or _as_left_by_a_response(policy, alert)
        said = now.changes_from(before)
        rows: list[SyncRow] = []
        if said:
            text = (
                f"Alert {alert.source} {alert.id} was {', '.join(said)} in Defender "
                f"(now {_words(now)})."
            )
            note_ticket_once(ticketing, ticket, text, [now.marker(key)])
            rows.append(
                SyncRow(
                    ticket=ticket.key,
                    alert=key,
                    change=", ".join(said),
                    from_=_words(before),
                    to=_words(now),
                )
            )
        if policy.sync.close_ticket_when_alerts == "all_resolved" and texts.phase == "open":
            states = {**recorded, key: now}
            if all(k in states and states[k].resolved for k in keys):
                rows += _close_ticket(ticketing, ticket, policy.sync, keys)
    return rows


def _applied_phase(texts: TicketTexts) -> str:
    last = last_ticket_marker(texts.notes)
    return "done" if last is not None and " ticket done " in last else "open"


def _as_left_by_a_response(policy: Policy, alert: Alert) -> AlertState:
    """What the sync assumes of an alert it has recorded nothing for: as its response left it,
    in progress, with the owner and verdict the policy's `triage:` gave it (the response's own
    writes are not a person's change; a person's first reassignment is)."""
    owner = classification = determination = None
    try:
        actions = evaluate(policy, alert).actions
    except Exception:  # a policy that no longer evaluates this alert: assume no triage
        actions = ()
    for action in actions:
        triage = action.triage
        if triage is not None:
            owner = triage.assign_to or owner
            classification = triage.classification or classification
            determination = triage.determination or determination
    return AlertState(
        status="inProgress",
        classification=classification,
        determination=determination,
        assigned_to=owner,
    )


def _close_ticket(
    ticketing: TicketingCredentials, ticket: Ticket, policy: SyncPolicy, keys: list[str]
) -> list[SyncRow]:
    """Resolve the ticket whose alerts are all resolved, then record it as applied: the next
    run leaves the alerts as the people who resolved them left them (a ticket resolution
    never overwrites an alert resolved already)."""
    resolution = policy.ticket_resolution if ticket.system == "jira" else policy.ticket_close_code
    changed = resolve_ticket(
        ticketing,
        ticket,
        resolution,
        f"All {len(keys)} alerts of this ticket were resolved in Defender.",
    )
    note_ticket_once(
        ticketing,
        ticket,
        f"Riposte resolved this ticket: all {len(keys)} of its alerts are resolved in Defender.",
        [ticket_marker("done", resolution)],
    )
    for key in keys:
        show_on_response(
            key, ticket, f"resolved by Riposte with {resolution}", "resolved in Defender"
        )
    return [
        SyncRow(
            ticket=ticket.key,
            alert="",
            change="ticket resolved" if changed else "ticket already resolved",
            from_="open" if changed else "resolved",
            to=f"resolved ({resolution})",
        )
    ]
