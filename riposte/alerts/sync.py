"""One lifecycle for an alert and its ticket: the policy's `sync:` section, the verdict a
ticket's resolution maps to, and the markers by which the sync finds the alerts on a ticket and
recognises what it has already applied.

Markers are lines that Riposte appends, after a blank line, to the text it writes on a ticket
(its description and its notes). Only that trailing paragraph is read: alert text quoted
earlier in a note can never pass for a marker, so a hostile alert title cannot make the sync
resolve another alert.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Literal, get_args
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field

from riposte.alerts.incidents import IncidentClassification, IncidentDetermination
from riposte.alerts.sources import SourceName

# The marker of an alert recorded on a ticket (the description of the ticket it opened, and
# each note that added it): `riposte.tasks.tickets.note_marker` writes it.
ALERT_MARKER = "Riposte alert key:"
SYNC_MARKER = "Riposte sync:"
# An alert's key names its source; a group's (`riposte-incident-...`, `riposte-throttle-...`)
# names none, and is never taken for an alert's.
_KEY = re.compile(rf"riposte-({'|'.join(get_args(SourceName))})-([A-Za-z0-9_.-]+)")


class SyncVerdict(BaseModel):
    """What an alert is resolved as, in Graph's spelling (each source writes what it has)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classification: IncidentClassification
    determination: IncidentDetermination = "unknown"


def _v(classification: IncidentClassification, determination: IncidentDetermination) -> SyncVerdict:
    return SyncVerdict(classification=classification, determination=determination)


# ServiceNow's incident close codes (the classic choices and the newer ones), as the sync maps
# them when the policy does not: solved means the threat was real and handled.
DEFAULT_CLOSE_CODES: dict[str, SyncVerdict] = {
    "Solved (Permanently)": _v("truePositive", "other"),
    "Solved (Work Around)": _v("truePositive", "other"),
    "Solved Remotely (Permanently)": _v("truePositive", "other"),
    "Solved Remotely (Work Around)": _v("truePositive", "other"),
    "Solution provided": _v("truePositive", "other"),
    "Workaround provided": _v("truePositive", "other"),
    "Resolved by change": _v("truePositive", "other"),
    "Resolved by problem": _v("truePositive", "other"),
    "Resolved by request": _v("truePositive", "other"),
    "Not Solved (Not Reproducible)": _v("falsePositive", "notEnoughDataToValidate"),
    "Not Solved (Too Costly)": _v("unknown", "unknown"),
    "User error": _v("falsePositive", "notMalicious"),
    "Known error": _v("informationalExpectedActivity", "other"),
    "Duplicate": _v("unknown", "unknown"),
    "Closed/Resolved by Caller": _v("unknown", "unknown"),
    "Resolved by caller": _v("unknown", "unknown"),
    "No resolution provided": _v("unknown", "unknown"),
}

# Jira's default resolutions.
DEFAULT_RESOLUTIONS: dict[str, SyncVerdict] = {
    "Done": _v("truePositive", "other"),
    "Fixed": _v("truePositive", "other"),
    "Won't Do": _v("informationalExpectedActivity", "other"),
    "Won't Fix": _v("informationalExpectedActivity", "other"),
    "Cannot Reproduce": _v("falsePositive", "notEnoughDataToValidate"),
    "Duplicate": _v("unknown", "unknown"),
    "Declined": _v("unknown", "unknown"),
    "Incomplete": _v("unknown", "unknown"),
}

UNKNOWN = _v("unknown", "unknown")


class SyncPolicy(BaseModel):
    """The policy's `sync:` section: how a ticket's resolution becomes the alerts' verdict, and
    what a change in Defender does to the ticket.

    Example:
        ```yaml
        sync:
          close_codes: {"Solved (Permanently)": {classification: truePositive,
                                                 determination: malware}}
          resolutions: {"Won't Do": {classification: falsePositive, determination: notMalicious}}
          resolve_incident: true
          close_ticket_when_alerts: all_resolved
        ```
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="False: the sync_tickets flow changes nothing")
    close_codes: dict[str, SyncVerdict] = Field(
        default_factory=dict,
        description="ServiceNow close code -> verdict, over the default mapping",
    )
    resolutions: dict[str, SyncVerdict] = Field(
        default_factory=dict, description="Jira resolution -> verdict, over the default mapping"
    )
    resolve_incident: bool = Field(
        False, description="Also resolve the alerts' Defender incident, with the same verdict"
    )
    close_ticket_when_alerts: Literal["never", "all_resolved"] = Field(
        "never", description="all_resolved: resolve the ticket once every alert on it is"
    )
    ticket_close_code: str = Field(
        "Solved (Permanently)",
        min_length=1,
        description="The ServiceNow close code of a ticket the sync resolves",
    )
    ticket_resolution: str = Field(
        "Done", min_length=1, description="The Jira resolution of an issue the sync resolves"
    )

    def verdict(self, system: str, resolution: str | None) -> tuple[SyncVerdict, bool]:
        """The verdict of a ticket resolved with ``resolution`` in ``system`` (servicenow, jira),
        and whether a mapping named it (False: "unknown", and the comment says so)."""
        if system == "jira":
            table = {**DEFAULT_RESOLUTIONS, **self.resolutions}
        else:
            table = {**DEFAULT_CLOSE_CODES, **self.close_codes}
        if resolution is not None and resolution in table:
            return table[resolution], True
        return UNKNOWN, False


# --- markers ---------------------------------------------------------------------------------


def trailing_markers(text: str) -> list[str]:
    """The marker lines of ``text``: its last paragraph, when every line of it is a marker."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if not paragraphs:
        return []
    lines = [line.strip() for line in paragraphs[-1].splitlines() if line.strip()]
    if not lines or not all(line.startswith((ALERT_MARKER, SYNC_MARKER)) for line in lines):
        return []
    return lines


def alert_keys(texts: Iterable[str]) -> list[str]:
    """The alert keys recorded on a ticket, in order, once each: from the trailing markers of
    its description and notes."""
    keys: dict[str, None] = {}
    for text in texts:
        for line in trailing_markers(text):
            if line.startswith(ALERT_MARKER):
                key = line.removeprefix(ALERT_MARKER).strip()
                if _KEY.fullmatch(key):
                    keys[key] = None
    return list(keys)


def parse_key(key: str) -> tuple[str, str] | None:
    """The source and alert id of an alert key (`riposte-<source>-<id>`). Ids are kept
    verbatim when they hold only letters, digits, `_`, `.` and `-`, as every Defender API's do."""
    match = _KEY.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


TicketPhase = Literal["open", "done"]


def ticket_marker(phase: TicketPhase, resolution: str | None) -> str:
    """The marker of a ticket state whose consequences on the alerts were applied."""
    return f"{SYNC_MARKER} ticket {phase} {digest(resolution or '')}"


def ticket_state_marker(note: str) -> str | None:
    """The applied ticket state ``note`` records, if it records one."""
    return next(
        (line for line in trailing_markers(note) if line.startswith(f"{SYNC_MARKER} ticket ")),
        None,
    )


def last_ticket_marker(notes: Iterable[str]) -> str | None:
    """The last applied ticket state recorded in ``notes`` (oldest first)."""
    found = None
    for note in notes:
        for line in trailing_markers(note):
            if line.startswith(f"{SYNC_MARKER} ticket "):
                found = line
    return found


class AlertState(BaseModel):
    """What the sync compares of an alert, in Graph's spelling; None where the API has none."""

    model_config = ConfigDict(frozen=True)

    status: str | None = None
    classification: str | None = None
    determination: str | None = None
    assigned_to: str | None = None

    def marker(self, key: str) -> str:
        """``Riposte sync: alert <key> <status> <classification> <determination> <owner>``,
        each `-` when unset, the owner percent-encoded."""
        parts = (self.status, self.classification, self.determination, self.assigned_to)
        fields = " ".join(quote(p, safe="@._") if p else "-" for p in parts)
        return f"{SYNC_MARKER} alert {key} {fields}"

    @classmethod
    def from_marker(cls, fields: list[str]) -> AlertState | None:
        if len(fields) != 4:
            return None
        status, classification, determination, owner = (
            unquote(f) if f != "-" else None for f in fields
        )
        return cls(
            status=status,
            classification=classification,
            determination=determination,
            assigned_to=owner,
        )

    def same_as(self, other: AlertState) -> bool:
        return not self.changes_from(other) and not other.changes_from(self)

    @property
    def resolved(self) -> bool:
        return (self.status or "").lower() == "resolved"

    def changes_from(self, before: AlertState) -> list[str]:
        """What a person changed, in words: resolved, reopened, reassigned, reclassified."""
        said: list[str] = []
        if self.resolved and not before.resolved:
            said.append("resolved")
        elif before.resolved and not self.resolved:
            said.append("reopened")
        if _blank(self.assigned_to) != _blank(before.assigned_to):
            said.append(f"reassigned to {self.assigned_to or 'nobody'}")
        verdict = (_blank(self.classification), _blank(self.determination))
        if verdict != (_blank(before.classification), _blank(before.determination)):
            said.append(
                f"reclassified as {self.classification or 'unknown'}"
                f" / {self.determination or 'unknown'}"
            )
        return said


def _blank(value: str | None) -> str:
    """Unset and "unknown" are the same verdict; an owner compares without case."""
    text = (value or "").strip().lower()
    return "" if text in ("unknown", "unknownfuturevalue") else text


def recorded_alert_states(notes: Iterable[str]) -> dict[str, AlertState]:
    """Alert key -> its last state the sync recorded on the ticket (notes oldest first)."""
    found: dict[str, AlertState] = {}
    for note in notes:
        for line in trailing_markers(note):
            if line.startswith(f"{SYNC_MARKER} alert "):
                key, *fields = line.removeprefix(f"{SYNC_MARKER} alert ").split()
                state = AlertState.from_marker(fields)
                if state is not None:
                    found[key] = state
    return found
