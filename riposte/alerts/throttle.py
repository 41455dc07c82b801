"""No over-response: throttles, incident grouping, suppression windows and digest buckets.

The decisions are pure functions of the planned action, the alert, a time and a small read-only
view of shared state (`ThrottleLedger`, `SuppressionLedger`). They return an `Outcome` that says
what to do and what to record; the flows do it and keep the state where two workers and a
restart can see it: the ticketing system itself answers `ThrottleLedger` (tickets carry the
group key as a label or correlation id), and Prefect keeps suppression times and digest
membership. `InMemoryLedger` and `DigestCollector` exist for tests and offline replays only.

Every key that reaches an external system (a ticket correlation key, a label) is made of
lowercase letters, digits and dashes, so ServiceNow queries and Jira labels accept it verbatim.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from riposte.alerts.matching import Evaluation, PlannedAction
from riposte.alerts.model import Alert, EntityType
from riposte.alerts.policy import Digest, format_duration

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Disposition(StrEnum):
    """How an alert was accounted for."""

    TICKET = "ticket"  # a ticket is found or created for it (and channels are notified)
    COMMENT = "comment"  # added as a comment to a ticket that already exists
    DIGEST = "digest"  # added to a digest bucket, posted once per period
    CLOSE = "close"  # closed at the source as benign / false positive
    SUPPRESSED = "suppressed"  # allowlisted, or inside a suppression window
    IGNORED = "ignored"  # the policy says to do nothing
    RUN = "run"  # a playbook that keeps no ticket accounting ran its own steps


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class OpenTicket(_Frozen):
    """A ticket a group of alerts goes to, as the ledger knows it."""

    key: str = Field(description="The ticket's key in the ticketing system (INC0010001, SEC-12)")
    correlation_key: str
    alerts: int = Field(1, ge=1, description="Alerts it holds: the one that opened it + comments")


class ThrottleLedger(Protocol):
    """Read-only view of the tickets opened for throttled or grouped alerts."""

    def count_since(self, key: str, since: datetime) -> int:
        """How many tickets were opened under group ``key`` at or after ``since``."""
        ...

    def open_ticket_for(self, key: str) -> OpenTicket | None:
        """The latest ticket opened under group ``key``, or None."""
        ...


class SuppressionLedger(Protocol):
    """Read-only view of when a response was last made for a suppression key."""

    def last_response(self, key: str) -> datetime | None: ...


class DigestBucket(_Frozen):
    """The digest message an alert goes into: one per channel per period."""

    channel: str
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        period = int((self.end - self.start).total_seconds())
        digest = _short_hash(f"{self.channel}|{period}", 10)
        return f"riposte-digest-{digest}-{self.start:%Y%m%d%H%M%S}"

    def is_due(self, now: datetime) -> bool:
        return now >= self.end


class Outcome(_Frozen):
    """What to do for one planned action, and what to record once it is done."""

    rule: str
    playbook: str
    disposition: Disposition
    reason: str
    at: datetime
    notify: tuple[str, ...] = Field(
        default=(), description="Channels to post to now: only when a new ticket is opened"
    )
    group_key: str | None = Field(
        None, description="Label under which the ticket of this group is found again"
    )
    ticket_correlation_key: str | None = Field(
        None, description="TICKET: the correlation key to find-or-create the ticket on"
    )
    ticket: OpenTicket | None = Field(None, description="COMMENT: the ticket to comment on")
    alert_number: int | None = Field(
        None, description="COMMENT: the alert is the n-th on that ticket (the count to show)"
    )
    digest: DigestBucket | None = None
    suppress_key: str | None = Field(
        None, description="A response is made: record `at` under this key once it is done"
    )
    key_values: dict[str, str] = Field(
        default_factory=dict, description="What the throttle or suppression key was made of"
    )


# --- keys ------------------------------------------------------------------------------------


def _short_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def key_values(parts: tuple[str, ...], alert: Alert) -> dict[str, str]:
    """The alert's value for each key part; ``-`` when it has none.

    Entity values are case-folded, de-duplicated and sorted, so the same entities in another
    order or case make the same key.
    """
    values: dict[str, str] = {}
    for part in parts:
        if part.startswith("entity:"):
            kind = EntityType(part.removeprefix("entity:"))
            found = sorted({e.value.strip().casefold() for e in alert.entities_of(kind)})
            values[part] = ",".join(found) or "-"
            continue
        value = {
            "source": alert.source,
            "alert_type": alert.alert_type,
            "policy_name": alert.policy_name,
            "category": alert.category,
            "severity": str(alert.severity),
            "service_source": alert.service_source,
            "detection_source": alert.detection_source,
            "incident": alert.incident_id,
            "title": alert.title,
        }[part]
        values[part] = value if value else "-"
    return values


def group_key(kind: str, rule: str, values: dict[str, str]) -> str:
    """A stable, label-safe key for a rule and key values (hashed: values hold any text)."""
    digest = _short_hash(json.dumps(values, sort_keys=True, ensure_ascii=False))
    return f"riposte-{kind}-{rule}-{digest}"


def incident_key(alert: Alert) -> str:
    """The correlation key of the one ticket of the alert's Defender incident."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", alert.incident_id or "-")
    return f"riposte-incident-{alert.source}-{safe}"


def slot_start(at: datetime, window: timedelta) -> datetime:
    """Start of the fixed window (aligned on the Unix epoch, UTC) that ``at`` falls in."""
    if at.tzinfo is None:
        raise ValueError("decision times must carry a timezone")
    size = window.total_seconds()
    elapsed = (at - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=elapsed - elapsed % size)


def digest_bucket(digest: Digest, at: datetime) -> DigestBucket:
    start = slot_start(at, digest.period)
    return DigestBucket(channel=digest.channel, start=start, end=start + digest.period)


def _describe(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


# --- the decision ----------------------------------------------------------------------------


def _outcome(
    action: PlannedAction,
    at: datetime,
    disposition: Disposition,
    reason: str,
    suppress_key: str | None = None,
    **fields: Any,
) -> Outcome:
    return Outcome(
        rule=action.rule,
        playbook=action.playbook,
        at=at,
        disposition=disposition,
        reason=reason,
        suppress_key=suppress_key,
        **fields,
    )


def gate(
    action: PlannedAction,
    alert: Alert,
    *,
    at: datetime,
    tickets: ThrottleLedger,
    suppressions: SuppressionLedger,
) -> Outcome:
    """Decide how ``action`` is carried out for ``alert`` at time ``at``.

    Pass the alert's ``created_at`` as ``at`` so that a retried run, or another worker, lands
    in the same windows and so on the same ticket keys.

    Order: ignore, allowlist, suppression window, then by the playbook's gating: close, digest,
    run, or a ticket (incident grouping first, then the throttle, else the alert's own ticket).
    """
    if at.tzinfo is None:
        raise ValueError("decision times must carry a timezone")
    if action.gating == "ignore":
        return _outcome(action, at, Disposition.IGNORED, "the policy ignores it")
    if action.allowlisted:
        return _outcome(action, at, Disposition.SUPPRESSED, action.allowlisted)

    suppress_key: str | None = None
    if action.suppress is not None:
        values = key_values(action.suppress.key, alert)
        suppress_key = group_key("s", action.rule, values)
        last = suppressions.last_response(suppress_key)
        window = action.suppress.window
        if last is not None and last <= at < last + window:
            reason = (
                f"a response for {_describe(values)} was made at {last.isoformat()}, "
                f"within the {format_duration(window)} suppression window"
            )
            return _outcome(action, at, Disposition.SUPPRESSED, reason, key_values=values)

    if action.gating == "close":
        return _outcome(action, at, Disposition.CLOSE, "closed by policy", suppress_key)
    if action.gating == "run":
        reason = f"the {action.playbook} playbook runs its steps"
        return _outcome(action, at, Disposition.RUN, reason, suppress_key)
    if action.gating == "digest":
        if action.digest is None:  # the policy loader refuses this; kept for hand-built actions
            raise ValueError(f"rule {action.rule!r}: the digest playbook needs a digest")
        bucket = digest_bucket(action.digest, at)
        reason = f"goes to the digest for {bucket.channel} of {bucket.start.isoformat()}"
        return _outcome(action, at, Disposition.DIGEST, reason, suppress_key, digest=bucket)
    return _ticket_outcome(action, alert, at, tickets, suppress_key)


def _ticket_outcome(
    action: PlannedAction,
    alert: Alert,
    at: datetime,
    tickets: ThrottleLedger,
    suppress_key: str | None,
) -> Outcome:
    if action.group_by_incident and alert.incident_id:
        key = incident_key(alert)
        existing = tickets.open_ticket_for(key)
        if existing is not None:
            reason = f"incident {alert.incident_id} already has ticket {existing.key}"
            return _outcome(
                action,
                at,
                Disposition.COMMENT,
                reason,
                suppress_key,
                group_key=key,
                ticket=existing,
                alert_number=existing.alerts + 1,
            )
        return _outcome(
            action,
            at,
            Disposition.TICKET,
            f"first alert of incident {alert.incident_id}",
            suppress_key,
            notify=action.channels,
            group_key=key,
            ticket_correlation_key=key,
        )

    throttle = action.throttle
    if throttle is None:
        return _outcome(
            action,
            at,
            Disposition.TICKET,
            "its own ticket",
            suppress_key,
            notify=action.channels,
            ticket_correlation_key=alert.correlation_key,
        )

    values = key_values(throttle.key, alert)
    key = group_key("t", action.rule, values)
    start = slot_start(at, throttle.window)
    opened = tickets.count_since(key, start)
    slot = f"{start:%Y%m%d%H%M%S}"
    window = f"the {format_duration(throttle.window)} window from {start.isoformat()}"
    if opened < throttle.max_tickets:
        return _outcome(
            action,
            at,
            Disposition.TICKET,
            f"ticket {opened + 1} of at most {throttle.max_tickets} for "
            f"{_describe(values)} in {window}",
            suppress_key,
            notify=action.channels,
            group_key=key,
            # Numbered within the slot: two workers deciding at once find-or-create the same
            # key, so they share one ticket instead of opening two.
            ticket_correlation_key=f"{key}-{slot}-{opened + 1}",
            key_values=values,
        )
    existing = tickets.open_ticket_for(key)
    if existing is not None:
        return _outcome(
            action,
            at,
            Disposition.COMMENT,
            f"throttled: {opened} ticket(s) already opened for {_describe(values)} in {window}",
            suppress_key,
            group_key=key,
            ticket=existing,
            alert_number=existing.alerts + 1,
            key_values=values,
        )
    # The ledger counts tickets it cannot show: find-or-create on the last key of the slot
    # finds that ticket if it exists, and opens one otherwise, so no alert is dropped.
    return _outcome(
        action,
        at,
        Disposition.TICKET,
        f"throttle limit reached for {_describe(values)} but no ticket was found",
        suppress_key,
        group_key=key,
        ticket_correlation_key=f"{key}-{slot}-{throttle.max_tickets}",
        key_values=values,
    )


def plan(
    decision: Evaluation,
    alert: Alert,
    *,
    at: datetime,
    tickets: ThrottleLedger,
    suppressions: SuppressionLedger,
) -> tuple[Outcome, ...]:
    """`gate` for every action of ``decision``, in order."""
    return tuple(
        gate(action, alert, at=at, tickets=tickets, suppressions=suppressions)
        for action in decision.actions
    )


# --- in-memory state, for tests and offline replays only ------------------------------------


class InMemoryLedger:
    """Both ledgers in a dict. Not for production: it lives in one process and dies with it."""

    def __init__(self) -> None:
        self._tickets: dict[str, list[tuple[datetime, OpenTicket]]] = defaultdict(list)
        self._responses: dict[str, datetime] = {}
        self._numbers = 0

    def count_since(self, key: str, since: datetime) -> int:
        return sum(1 for opened, _ in self._tickets.get(key, ()) if opened >= since)

    def open_ticket_for(self, key: str) -> OpenTicket | None:
        entries = self._tickets.get(key)
        return entries[-1][1] if entries else None

    def last_response(self, key: str) -> datetime | None:
        return self._responses.get(key)

    def record(self, outcome: Outcome, ticket_key: str | None = None) -> OpenTicket | None:
        """Record what the flow did for ``outcome``; returns the ticket it went to, if any."""
        ticket: OpenTicket | None = None
        if outcome.disposition == Disposition.TICKET and outcome.ticket_correlation_key:
            ticket = self._find(outcome.ticket_correlation_key)
            if ticket is None:
                self._numbers += 1
                ticket = OpenTicket(
                    key=ticket_key or f"TICKET-{self._numbers}",
                    correlation_key=outcome.ticket_correlation_key,
                )
                if outcome.group_key:
                    self._tickets[outcome.group_key].append((outcome.at, ticket))
                else:
                    self._tickets[ticket.correlation_key].append((outcome.at, ticket))
        elif outcome.disposition == Disposition.COMMENT and outcome.group_key and outcome.ticket:
            entries = self._tickets[outcome.group_key]
            for index, (opened, held) in enumerate(entries):
                if held.correlation_key == outcome.ticket.correlation_key:
                    ticket = held.model_copy(update={"alerts": held.alerts + 1})
                    entries[index] = (opened, ticket)
        if outcome.suppress_key and outcome.disposition != Disposition.SUPPRESSED:
            previous = self._responses.get(outcome.suppress_key)
            if previous is None or outcome.at > previous:
                self._responses[outcome.suppress_key] = outcome.at
        return ticket

    def _find(self, correlation_key: str) -> OpenTicket | None:
        for entries in self._tickets.values():
            for _, ticket in entries:
                if ticket.correlation_key == correlation_key:
                    return ticket
        return None

    @property
    def tickets(self) -> list[OpenTicket]:
        return [t for entries in self._tickets.values() for _, t in entries]


class DigestCollector:
    """Digest buckets in a dict, for tests: what a scheduled digest flow would post."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[DigestBucket, list[Alert]]] = {}
        self._posted: set[str] = set()

    def add(self, outcome: Outcome, alert: Alert) -> None:
        if outcome.digest is None:
            raise ValueError("only digest outcomes go into a digest")
        bucket = outcome.digest
        held = self._buckets.setdefault(bucket.key, (bucket, []))[1]
        if all(a.correlation_key != alert.correlation_key for a in held):
            held.append(alert)

    def due(self, now: datetime) -> list[tuple[DigestBucket, list[Alert]]]:
        """Buckets whose period is over and that were not posted yet, oldest first."""
        ready = [
            (bucket, alerts)
            for key, (bucket, alerts) in self._buckets.items()
            if bucket.is_due(now) and key not in self._posted
        ]
        return sorted(ready, key=lambda item: (item[0].start, item[0].channel))

    def mark_posted(self, bucket: DigestBucket) -> None:
        self._posted.add(bucket.key)
