"""The simulated world: what production keeps in its ticketing systems, in Prefect and at the
sources (tickets, suppression times, messages sent, digests, containment, incident writes),
held in memory for one replay and built up alert by alert."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert
from riposte.alerts.policy import Policy
from riposte.alerts.response import Ticket
from riposte.alerts.throttle import DigestBucket, OpenTicket, Outcome

SIMULATED_URL = "https://replay.invalid"
"""Where a simulated ticket "lives": a reserved name that never resolves."""


@dataclass
class SimTicket:
    system: str
    key: str
    correlation_key: str
    group_key: str | None
    opened_at: datetime
    opened_by: str
    rule: str
    alerts: int = 1
    notes: list[str] = field(default_factory=list)

    def ticket(self, created: bool) -> Ticket:
        return Ticket(
            system=self.system,
            key=self.key,
            id=self.key,
            url=f"{SIMULATED_URL}/{self.system}/{self.key}",
            created=created,
        )


class Desk:
    """The tickets of one ticketing system (and Jira project), as production's `TicketLedger`
    reads them there: by correlation key, and by group key in the order they were opened."""

    def __init__(self) -> None:
        self.tickets: dict[str, SimTicket] = {}
        self._groups: dict[str, list[SimTicket]] = defaultdict(list)

    # ThrottleLedger
    def count_since(self, key: str, since: datetime) -> int:
        return sum(1 for t in self._groups.get(key, ()) if t.opened_at >= since)

    def open_ticket_for(self, key: str) -> OpenTicket | None:
        held = self._groups.get(key)
        if not held:
            return None
        last = held[-1]
        return OpenTicket(key=last.key, correlation_key=last.correlation_key, alerts=last.alerts)

    def add(self, ticket: SimTicket) -> None:
        self.tickets[ticket.correlation_key] = ticket
        if ticket.group_key:
            self._groups[ticket.group_key].append(ticket)


_NO_TICKETS = Desk()
"""What `gate` reads for an action that keeps no ticket accounting (production's `NoTickets`)."""


class World:
    """What production keeps in the ticketing systems, in Prefect and at the sources, for one
    replay: tickets per system and project, suppression times, messages sent, digest buckets,
    the containment requests started, the writes made on incidents. Answers the
    `SuppressionLedger` view that `gate` reads; each `Desk` answers `ThrottleLedger`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.oncall = frozenset(policy.defaults.oncall_channels)
        self.desks: dict[tuple[str, str], Desk] = {}
        self._numbers: Counter[str] = Counter()
        self._responses: dict[str, datetime] = {}
        self.sent: set[tuple[str, str, str]] = set()
        self.digests: dict[str, tuple[DigestBucket, list[str]]] = {}
        self.containments: dict[str, str] = {}
        self.incident_writes: set[tuple[str, str]] = set()
        self._notes: set[tuple[str, str, str]] = set()

    def desk(self, action: PlannedAction) -> Desk:
        """Where the action's tickets are: its system, and for Jira its project (ServiceNow
        finds a correlation key across the instance, whatever the queue)."""
        target = action.ticket
        if target is None:
            return _NO_TICKETS
        place = (target.system, (target.project or "") if target.system == "jira" else "")
        return self.desks.setdefault(place, Desk())

    def ledger(self, action: PlannedAction) -> Desk:
        """What `decide` reads for the action: its desk when a throttle or incident grouping
        needs one, else nothing."""
        if action.throttle is None and not action.group_by_incident:
            return _NO_TICKETS
        return self.desk(action)

    # SuppressionLedger
    def last_response(self, key: str) -> datetime | None:
        return self._responses.get(key)

    def record_response(self, key: str, at: datetime) -> None:
        previous = self._responses.get(key)
        if previous is None or at > previous:
            self._responses[key] = at

    def open(self, desk: Desk, system: str, correlation_key: str, outcome: Outcome,
             alert: Alert) -> SimTicket:  # fmt: skip
        self._numbers[system] += 1
        prefix = "SIM" if system == "jira" else "SIMINC"
        ticket = SimTicket(
            system=system,
            key=f"{prefix}-{self._numbers[system]}",
            correlation_key=correlation_key,
            group_key=outcome.group_key,
            opened_at=outcome.at,
            opened_by=alert.correlation_key,
            rule=outcome.rule,
        )
        desk.add(ticket)
        return ticket

    def find(self, key: str) -> SimTicket | None:
        for desk in self.desks.values():
            for ticket in desk.tickets.values():
                if ticket.key == key:
                    return ticket
        return None

    def add_note(self, ticket: SimTicket, alert: Alert, text: str) -> bool:
        key = (ticket.correlation_key, alert.correlation_key, text)
        if key in self._notes:
            return False
        self._notes.add(key)
        ticket.notes.append(text)
        return True
