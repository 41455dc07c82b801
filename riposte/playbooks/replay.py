"""Replay: past alerts through a policy and its playbooks, simulated in memory.

`simulate` takes alerts in time order through the policy's whole decision (rules, allowlists,
suppression windows, incident grouping, throttles, digests) and runs each playbook's own code
with a `SimulatedContext`: the same `Context` a response gets, whose steps record what they
would do instead of doing it. Nothing is written anywhere and nothing is read but the alerts:
the throttle and suppression state that production keeps in the ticketing system and in
Prefect lives here in one `World`, built up alert by alert, so the thousandth alert sees the
tickets the first 999 opened.

The report counts what a SOC lead looks at: per rule and playbook the alerts matched, tickets
opened, notes, messages per channel, digest entries, containment asked for approval or taken
at once, alerts ignored, suppressed or closed; tickets per 100 alerts, pages per day, the
busiest entity. `compare` sets two reports side by side, alert by alert.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from riposte.alerts.approval import ContainmentRequest
from riposte.alerts.documents import read_documents
from riposte.alerts.errors import AlertParseError
from riposte.alerts.incidents import IncidentUpdate, IncidentWrite
from riposte.alerts.matching import PlannedAction, evaluate
from riposte.alerts.model import Alert
from riposte.alerts.plain import code_span, one_line
from riposte.alerts.policy import Close, Policy
from riposte.alerts.response import Delivery, Ticket, response_revision
from riposte.alerts.sources import iter_alert_payloads, parse_alert
from riposte.alerts.throttle import (
    DigestBucket,
    Disposition,
    OpenTicket,
    Outcome,
    digest_bucket,
    gate,
)
from riposte.playbooks.context import (
    ActionResult,
    Context,
    Plan,
    TicketStep,
    _joined,
)
from riposte.playbooks.registry import registry
from riposte.playbooks.runner import RESPONDED
from riposte.tasks.alerts import AlertClosure, AlertTriage, AlertUpdate

SIMULATED_URL = "https://replay.invalid"
"""Where a simulated ticket "lives": a reserved name that never resolves."""


class SimulationUnsupported(RuntimeError):
    """A playbook reached past the steps of `Context` (its own tasks, the Defender block): a
    simulated replay cannot show that; a staging run (`riposte replay --stage`) does."""


# --- reading alerts ---------------------------------------------------------------------------


class Skipped(BaseModel):
    """An input that was not replayed, and why."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class Loaded:
    alerts: list[Alert] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def alert_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and the ``.json``/``.ndjson``/``.jsonl`` files of the folders named
    (recursively, in name order; dot files and folders left out)."""
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in {".json", ".ndjson", ".jsonl"}
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            yield from found
        else:
            yield path


def load_alerts(paths: Iterable[Path], source: str | None = None) -> Loaded:
    """Every alert of the files and folders named; an unreadable file or an alert that cannot
    be parsed is skipped with one line naming it and the problem, and the rest are kept."""
    loaded = Loaded()
    for path in alert_files(paths):
        try:
            documents = list(
                read_documents(
                    path,
                    on_bad_line=lambda exc, path=path: loaded.skipped.append(  # type: ignore[misc]
                        Skipped(where=str(path), problem=str(exc))
                    ),
                )
            )
        except AlertParseError as exc:
            loaded.skipped.append(Skipped(where=str(path), problem=str(exc)))
            continue
        index = 0
        for document in documents:
            bad: list[AlertParseError] = []
            try:
                payloads = list(iter_alert_payloads(document, on_bad_item=bad.append))
            except AlertParseError as exc:
                loaded.skipped.append(Skipped(where=str(path), problem=str(exc)))
                continue
            loaded.skipped.extend(Skipped(where=str(path), problem=str(exc)) for exc in bad)
            for payload in payloads:
                try:
                    loaded.alerts.append(parse_alert(payload, source))
                except AlertParseError as exc:
                    loaded.skipped.append(
                        Skipped(where=f"{path}: alert [{index}]", problem=str(exc))
                    )
                index += 1
    return loaded


# --- the simulated world -------------------------------------------------------------------


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


class _NoBlocks:
    def __getattr__(self, name: str) -> Any:
        raise SimulationUnsupported(
            "a simulated replay loads no block; what the playbook does with one is seen in a "
            "staging run (riposte replay --stage)"
        )


class SimulatedResponse:
    """A `Response` without blocks: a simulated step never reaches a system."""

    def __init__(self) -> None:
        self.plan = Plan()
        self.blocks = _NoBlocks()

    @property
    def defender(self) -> Any:
        raise SimulationUnsupported(
            "the playbook reads the Defender credentials (its own calls are not simulated; "
            "a staging run, riposte replay --stage, runs them against the sandbox)"
        )

    def channels(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        return wanted


class SimulatedContext(Context):
    """`Context` whose steps record what they would do in ``world`` instead of doing it; what
    a playbook decides from their answers (``opened.is_new``...) is what production would
    decide, because the world holds what production's systems would hold."""

    def __init__(self, world: World, alert: Alert, action: PlannedAction, outcome: Outcome) -> None:
        super().__init__(SimulatedResponse(), alert, action, outcome)  # type: ignore[arg-type]
        self.world = world
        self.messages: list[str] = []
        self.requests: list[tuple[str, ContainmentRequest, bool]] = []
        """Containment asked: (run, request, whether this alert's ask started it)."""
        self.triage_written: tuple[str, ...] = ()

    def _system(self) -> str:
        target = self.action.ticket
        if target is None:
            raise ValueError(
                f"rule {self.action.rule!r}: the {self.action.playbook} playbook files a ticket "
                "but the rule names no ticket system (`ticket: {system: ...}` here or in defaults)"
            )
        return target.system

    def _take_ticket(self) -> TicketStep:
        outcome, alert = self.outcome, self.alert
        system = self._system()
        world = self.world
        desk = world.desk(self.action)
        if outcome.disposition == Disposition.TICKET and outcome.ticket_correlation_key:
            key = outcome.ticket_correlation_key
            held = desk.tickets.get(key)
            if held is None:
                held = world.open(desk, system, key, outcome, alert)
                self.result.ticket_created = True
                return TicketStep(ticket=held.ticket(True), correlation_key=key, is_new=True)
            if held.opened_by == alert.correlation_key:
                # Found again by the alert that opened it (another of its rules, a new
                # revision): production's find-or-create answers "opened by this alert".
                return TicketStep(ticket=held.ticket(False), correlation_key=key, is_new=True)
            # Find-or-create found the ticket another alert opened: a note on it.
            held.alerts += 1
            world.add_note(held, alert, _joined(outcome))
            self.result.disposition = str(Disposition.COMMENT)
            return TicketStep(
                ticket=held.ticket(False), correlation_key=key, is_new=False,
                alert_number=held.alerts,
            )  # fmt: skip
        if outcome.disposition == Disposition.COMMENT and outcome.ticket is not None:
            held = desk.tickets[outcome.ticket.correlation_key]
            held.alerts += 1
            world.add_note(held, alert, outcome.reason)
            return TicketStep(
                ticket=held.ticket(False),
                correlation_key=held.correlation_key,
                is_new=False,
                alert_number=held.alerts,
            )
        raise ValueError(f"{outcome.playbook} cannot carry out a {outcome.disposition} outcome")

    def note(self, ticket: Ticket, text: str) -> bool:
        held = self.world.find(ticket.key)
        added = held is not None and self.world.add_note(held, self.alert, text)
        self.result.notes.append(f"note on {ticket.key}: {text[:200]}")
        return added

    def notify(
        self, channels: Sequence[str] | str | None = None, *, ticket: Ticket | None = None
    ) -> list[Delivery]:
        wanted = self._wanted(channels)
        deliveries = [Delivery(channel=name, delivered=True, detail="simulated") for name in wanted]
        # Keyed as production's notify step: by what the message is about (the ticket, else
        # the alert), the alert's revision and the channel; a repeat comes back Cached.
        subject = self._ticket_step.correlation_key if self._ticket_step else None
        revision = response_revision(self.alert)
        for name in wanted:
            key = (subject or self.alert.correlation_key, revision, name)
            if key not in self.world.sent:
                self.world.sent.add(key)
                self.messages.append(name)
        self.result.deliveries.extend(deliveries)
        return deliveries

    def update_alert(self, ticket: Ticket | None = None) -> AlertUpdate:
        update = AlertUpdate(status_changed=True, comment_added=ticket is not None,
                             status="inProgress")  # fmt: skip
        self.result.alert_update = update
        return update

    def close_alert(
        self, classification: Literal["benign", "false_positive"], reason: str
    ) -> AlertClosure:
        close = Close(classification=classification, reason=reason)
        self.result.closed = f"{close.classification}: {close.reason}"
        return AlertClosure(
            classification=close.classification, reason=close.reason, status="resolved"
        )

    def _triage_write(self, wanted: dict[str, str]) -> AlertTriage | None:
        written = tuple(wanted)
        self.triage_written = written
        return AlertTriage(written=written)

    def _write_incident(self, incident_id: str, asked: IncidentUpdate) -> IncidentWrite | None:
        first = (incident_id, asked.model_dump_json()) not in self.world.incident_writes
        self.world.incident_writes.add((incident_id, asked.model_dump_json()))
        fields = tuple(
            name
            for name in ("assign_to", "status", "classification", "determination")
            if getattr(asked, name) is not None
        ) + (("tags",) if asked.tags else ())
        write = IncidentWrite(
            incident_id=incident_id,
            fields=fields if first else (),
            comment_added=first and asked.comment is not None,
            tags=asked.tags,
            assigned_to=asked.assign_to,
        )
        self.result.incident = write
        return write

    def add_to_digest(self) -> str:
        bucket = self.outcome.digest
        if bucket is None:
            if self.action.digest is None:
                raise ValueError(
                    f"rule {self.rule!r}: no digest to add to: give `digest: {{channel, "
                    "period}` in the rule or in defaults"
                )
            bucket = digest_bucket(self.action.digest, self.outcome.at)
        held = self.world.digests.setdefault(bucket.key, (bucket, []))[1]
        if self.alert.correlation_key not in held:
            held.append(self.alert.correlation_key)
        self.result.digest = bucket.key
        if self.result.ticket is None:
            self.result.disposition = str(Disposition.DIGEST)
        return bucket.key

    def _start_containment(self, request: ContainmentRequest) -> str:
        # One request per ticket and set of actions, as the idempotency key of the real run.
        started = self.world.containments.get(request.key)
        new = started is None
        if started is None:
            started = self.world.containments[request.key] = (
                f"replay-{len(self.world.containments) + 1}"
            )
        self.requests.append((started, request, new))
        return started


# --- the report ---------------------------------------------------------------------------------


class Treatment(BaseModel):
    """What the policy did with one alert."""

    alert: str = Field(description="source-id")
    title: str
    severity: str
    created_at: datetime
    rules: list[str]
    playbooks: list[str]
    dispositions: list[str]
    tickets_opened: list[str] = []
    """Simulated keys (SIMINC-n for ServiceNow, SIM-n for Jira) of the tickets it opened."""
    ticket_notes: list[str] = []
    """Tickets it was added to as a note."""
    messages: list[str] = []
    digest: list[str] = []
    containment: list[str] = []
    """Per request asked (a request already started for the same ticket and actions included):
    ``approval`` (asked of approvers) or ``automatic``, with each action's kind and target."""
    closed: list[str] = []
    alert_updated: bool = False
    incident_written: bool = False
    ticket_system: list[str] = []
    """Per action that filed a ticket: system and priority (``servicenow high``)."""
    errors: list[str] = []

    @property
    def ticket_kind(self) -> str:
        kind = "ticket" if self.tickets_opened else "note" if self.ticket_notes else "none"
        return f"{kind} ({', '.join(self.ticket_system)})" if kind != "none" else kind

    @property
    def contained(self) -> bool:
        return bool(self.containment)


class RuleStats(BaseModel):
    rule: str
    playbook: str
    alerts: int = 0
    tickets: int = 0
    notes: int = 0
    messages: dict[str, int] = {}
    digest_entries: int = 0
    containment_approval: int = 0
    containment_automatic: int = 0
    closed: int = 0
    ignored: int = 0
    suppressed: int = 0
    errors: int = 0


class Totals(BaseModel):
    alerts: int = 0
    tickets: int = 0
    notes: int = 0
    messages: int = 0
    pages: int = 0
    digest_entries: int = 0
    digest_messages: int = 0
    containments: int = 0
    containment_approval: int = 0
    containment_automatic: int = 0
    closed: int = 0
    ignored: int = 0
    suppressed: int = 0
    alert_updates: int = 0
    incident_updates: int = 0
    errors: int = 0


class Noise(BaseModel):
    tickets_per_100_alerts: float
    pages_per_day: float
    days: float
    busiest_entity: str | None
    busiest_entity_alerts: int = 0


class Report(BaseModel):
    """The outcome of one simulated replay."""

    policy: str
    policy_sha256: str
    first_alert: datetime | None
    last_alert: datetime | None
    totals: Totals
    noise: Noise
    rules: list[RuleStats]
    messages_per_channel: dict[str, int]
    alerts: list[Treatment]
    repeats: int = 0
    """Alerts met again (same source, id and revision): answered once, at the first sighting.
    A new revision (another severity, reopened) is answered again, as production does."""
    skipped: list[Skipped] = []
    digest_channels: dict[str, str] = {}
    """Each digest bucket's channel and period start, by bucket key."""


def _containment_kind(request: ContainmentRequest) -> str:
    mode = "automatic" if request.automatic else "approval"
    return f"{mode}: " + ", ".join(f"{a.kind} {a.target}" for a in request.actions)


def _busiest(alerts: Sequence[Alert]) -> tuple[str | None, int]:
    counts: Counter[str] = Counter()
    for alert in alerts:
        for label in {f"{e.type}:{e.value.strip().casefold()}" for e in alert.entities}:
            counts[label] += 1
    if not counts:
        return None, 0
    label, n = min(counts.items(), key=lambda item: (-item[1], item[0]))
    return label, n


def simulate(
    policy: Policy,
    alerts: Iterable[Alert],
    *,
    sha256: str = "",
    skipped: Sequence[Skipped] = (),
    progress: Callable[[int, int], None] | None = None,
    days: float | None = None,
) -> Report:
    """Replay ``alerts`` in time order through ``policy`` and its playbooks, in memory.
    ``days``: the window the alerts were read from, for the per-day figures (default: from the
    first alert to the last, at least one day)."""
    ordered = sorted(alerts, key=lambda a: (a.created_at, a.source, a.id))
    seen: set[tuple[str, str, str]] = set()
    unique: list[Alert] = []
    for alert in ordered:
        key = (alert.source, alert.id, response_revision(alert))
        if key not in seen:
            seen.add(key)
            unique.append(alert)
    world = World(policy)
    found = registry()
    treatments: list[Treatment] = []
    stats: dict[tuple[str, str], RuleStats] = {}
    per_channel: Counter[str] = Counter()
    totals = Totals(alerts=len(unique))
    for number, alert in enumerate(unique, 1):
        treatment = Treatment(
            alert=f"{alert.source}-{alert.id}",
            title=alert.title,
            severity=str(alert.severity),
            created_at=alert.created_at,
            rules=[],
            playbooks=[],
            dispositions=[],
        )
        treatments.append(treatment)
        try:
            actions = evaluate(policy, alert).actions
        except Exception as exc:  # a hand-built policy the loader would refuse
            treatment.errors.append(f"the policy could not decide: {exc}")
            totals.errors += 1
            continue
        # As `decide`: every action is gated first, then carried out in order.
        outcomes = [
            gate(action, alert, at=alert.created_at, tickets=world.ledger(action),
                 suppressions=world)
            for action in actions
        ]  # fmt: skip
        failed = False
        for action, outcome in zip(actions, outcomes, strict=True):
            row = stats.setdefault(
                (action.rule, action.playbook),
                RuleStats(rule=action.rule, playbook=action.playbook),
            )
            row.alerts += 1
            treatment.rules.append(action.rule)
            treatment.playbooks.append(action.playbook)
            if failed:  # production's response stops at the first failure
                treatment.dispositions.append("not carried out")
                continue
            if outcome.disposition not in RESPONDED:
                treatment.dispositions.append(str(outcome.disposition))
                if outcome.disposition == Disposition.IGNORED:
                    row.ignored += 1
                    totals.ignored += 1
                else:
                    row.suppressed += 1
                    totals.suppressed += 1
                continue
            ctx = SimulatedContext(world, alert, action, outcome)
            try:
                playbook = found.get(action.playbook)
                playbook(alert, playbook.params_model.model_validate(action.params), ctx)
            except Exception as exc:
                # As in production: the response fails here, its suppression window is not
                # started, and what its steps did before the failure stays done.
                treatment.errors.append(f"rule {action.rule}: {type(exc).__name__}: {exc}"[:500])
                row.errors += 1
                totals.errors += 1
                failed = True
            else:
                if outcome.suppress_key:
                    world.record_response(outcome.suppress_key, outcome.at)
            _account(ctx, treatment, row, totals, per_channel, world)
        totals.alert_updates += treatment.alert_updated
        totals.incident_updates += treatment.incident_written
        if progress is not None:
            progress(number, len(unique))
    totals.digest_messages = len(world.digests)
    first = unique[0].created_at if unique else None
    last = unique[-1].created_at if unique else None
    if days is None:
        days = max(1.0, (last - first).total_seconds() / 86400) if first and last else 1.0
    busiest, busiest_n = _busiest(unique)
    noise = Noise(
        tickets_per_100_alerts=round(100 * totals.tickets / len(unique), 2) if unique else 0.0,
        pages_per_day=round(totals.pages / days, 4),
        days=round(days, 2),
        busiest_entity=busiest,
        busiest_entity_alerts=busiest_n,
    )
    return Report(
        policy=policy.origin,
        policy_sha256=sha256 or policy.sha256,
        first_alert=first,
        last_alert=last,
        totals=totals,
        noise=noise,
        rules=sorted(stats.values(), key=lambda r: (-r.alerts, r.rule, r.playbook)),
        messages_per_channel=dict(sorted(per_channel.items())),
        alerts=treatments,
        repeats=len(ordered) - len(unique),
        skipped=list(skipped),
        digest_channels={
            key: f"{bucket.channel} from {bucket.start:%Y-%m-%d %H:%M}"
            for key, (bucket, _) in world.digests.items()
        },
    )


def _account(
    ctx: SimulatedContext,
    treatment: Treatment,
    row: RuleStats,
    totals: Totals,
    per_channel: Counter[str],
    world: World,
) -> None:
    """Add what one action's steps did to the alert's treatment and the figures."""
    result: ActionResult = ctx.result
    treatment.dispositions.append(result.disposition)
    if result.ticket is not None:
        treatment.ticket_system.append(f"{result.ticket.system} {ctx.action.priority}")
        if result.ticket_created:
            treatment.tickets_opened.append(result.ticket.key)
            row.tickets += 1
            totals.tickets += 1
        elif result.alert_number is not None:
            treatment.ticket_notes.append(result.ticket.key)
            row.notes += 1
            totals.notes += 1
    for channel in ctx.messages:
        treatment.messages.append(channel)
        row.messages[channel] = row.messages.get(channel, 0) + 1
        per_channel[channel] += 1
        totals.messages += 1
        if channel in world.oncall:
            totals.pages += 1
    if result.digest:
        treatment.digest.append(result.digest)
        row.digest_entries += 1
        totals.digest_entries += 1
    for _, request, new in ctx.requests:
        treatment.containment.append(_containment_kind(request))
        if not new:
            continue
        totals.containments += 1
        if request.automatic:
            row.containment_automatic += 1
            totals.containment_automatic += 1
        else:
            row.containment_approval += 1
            totals.containment_approval += 1
    if result.closed:
        treatment.closed.append(result.closed)
        row.closed += 1
        totals.closed += 1
    if result.alert_update is not None:
        treatment.alert_updated = True
    if result.incident is not None:
        treatment.incident_written = True


# --- two policies side by side --------------------------------------------------------------


class Difference(BaseModel):
    alert: str
    title: str
    changes: dict[str, tuple[str, str]]
    """What changed, by aspect (rules, playbooks, ticket, containment): (base, candidate)."""


class Comparison(BaseModel):
    base: Report
    candidate: Report
    differences: list[Difference]
    changed: int
    totals: dict[str, tuple[float, float]]
    """Each total and noise figure: (base, candidate)."""


def _aspects(t: Treatment, digests: dict[str, str]) -> dict[str, str]:
    return {
        "rules": ", ".join(t.rules) or "-",
        "playbooks": ", ".join(t.playbooks) or "-",
        "ticket": t.ticket_kind,
        "messages": ", ".join(sorted(t.messages)) or "none",
        "digest": ", ".join(digests.get(d, d) for d in t.digest) or "none",
        "containment": "; ".join(t.containment) or "none",
        "closed": "; ".join(t.closed) or "no",
        "dispositions": ", ".join(t.dispositions) or "-",
        "errors": "; ".join(t.errors) or "none",
    }


def figures(report: Report) -> dict[str, float]:
    figures: dict[str, float] = {k: float(v) for k, v in report.totals.model_dump().items()}
    figures["skipped"] = float(len(report.skipped))
    figures["tickets_per_100_alerts"] = report.noise.tickets_per_100_alerts
    figures["pages_per_day"] = report.noise.pages_per_day
    return figures


def compare(base: Report, candidate: Report) -> Comparison:
    """Alert by alert, what ``candidate`` does differently from ``base`` (same alerts)."""
    theirs = {(t.alert, t.created_at): t for t in candidate.alerts}
    differences = []
    for mine in base.alerts:
        other = theirs.get((mine.alert, mine.created_at))
        if other is None:
            continue
        a, b = _aspects(mine, base.digest_channels), _aspects(other, candidate.digest_channels)
        changes = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        if changes:
            differences.append(Difference(alert=mine.alert, title=mine.title, changes=changes))
    fb, fc = figures(base), figures(candidate)
    return Comparison(
        base=base,
        candidate=candidate,
        differences=differences,
        changed=len(differences),
        totals={k: (fb[k], fc[k]) for k in fb},
    )


# --- thresholds that fail a run --------------------------------------------------------------

_THRESHOLD = re.compile(r"^\s*([a-z_0-9]+)\s*>\s*([0-9]+(?:\.[0-9]+)?)\s*(%?)\s*$")
THRESHOLD_METRICS = (
    "changed",
    "tickets",
    "notes",
    "messages",
    "pages",
    "digest_entries",
    "containments",
    "containment_approval",
    "containment_automatic",
    "closed",
    "ignored",
    "suppressed",
    "errors",
    "skipped",
)


@dataclass(frozen=True)
class Threshold:
    """``METRIC>N`` or ``METRIC>N%``: compared with a base policy, the increase (in alerts,
    or in per cent of the base's figure); alone, the figure (or its per cent of the alerts).
    ``skipped`` (inputs not replayed) is always the figure itself."""

    metric: str
    limit: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> Threshold:
        found = _THRESHOLD.match(text)
        if found is None:
            raise ValueError(
                f"--fail-on {text!r}: expected METRIC>N or METRIC>N% (e.g. tickets>10%, "
                "containments>0)"
            )
        metric, number, percent = found.groups()
        if metric not in THRESHOLD_METRICS:
            raise ValueError(
                f"--fail-on {text!r}: unknown metric {metric!r}; known: "
                + ", ".join(THRESHOLD_METRICS)
            )
        return cls(metric=metric, limit=float(number), percent=bool(percent))

    def __str__(self) -> str:
        return f"{self.metric}>{self.limit:g}{'%' if self.percent else ''}"

    def breached(self, report: Report, comparison: Comparison | None) -> str | None:
        """Why the threshold is crossed, or None."""
        if self.metric == "changed":
            if comparison is None:  # the command line refuses this without a base
                return None
            value = float(comparison.changed)
            base = float(comparison.base.totals.alerts)
            shown = value if not self.percent else (100 * value / base if base else 0.0)
            if shown > self.limit:
                return f"{self}: {comparison.changed} alert(s) treated differently"
            return None
        if comparison is None or self.metric == "skipped":  # inputs: the same for both
            value = figures(report)[self.metric]
            alerts = report.totals.alerts
            shown = value if not self.percent else (100 * value / alerts if alerts else 0.0)
            if shown > self.limit:
                unit = f" ({shown:.1f}% of {alerts} alerts)" if self.percent else ""
                return f"{self}: {value:g}{unit}"
            return None
        before, after = comparison.totals[self.metric]
        increase = after - before
        if self.percent:
            shown = 100 * increase / before if before else (math.inf if increase > 0 else 0.0)
        else:
            shown = increase
        if shown > self.limit:
            percent = f", {shown:+.1f}%" if self.percent and math.isfinite(shown) else ""
            return f"{self}: {before:g} -> {after:g} ({increase:+g}{percent})"
        return None


# --- rendering ----------------------------------------------------------------------------------


def plain(text: str, limit: int = 80) -> str:
    """Alert text shown on a terminal: control and bidirectional characters escaped, one line,
    cut at ``limit``."""
    return one_line(text, limit)


def md_text(text: str, limit: int = 120) -> str:
    """Alert text in a markdown cell (`code_span`): a code span (no link, image or emphasis),
    one line, no pipe of it ending the cell."""
    return code_span(text, limit, cell=True)


def _rule_rows(report: Report) -> list[list[str]]:
    rows = []
    for r in report.rules:
        messages = str(sum(r.messages.values()))
        rows.append(
            [r.rule, r.playbook, str(r.alerts), str(r.tickets), str(r.notes), messages,
             str(r.digest_entries), f"{r.containment_approval}/{r.containment_automatic}",
             str(r.closed), str(r.ignored), str(r.suppressed), str(r.errors)]
        )  # fmt: skip
    return rows


_RULE_HEADER = [
    "rule", "playbook", "alerts", "tickets", "notes", "messages", "digest",
    "contain (approval/auto)", "closed", "ignored", "suppressed", "errors",
]  # fmt: skip


def _window(report: Report) -> str:
    if report.first_alert is None or report.last_alert is None:
        return "no alerts"
    return f"{report.first_alert:%Y-%m-%d %H:%M} to {report.last_alert:%Y-%m-%d %H:%M} UTC"


def _noise_lines(report: Report, show: Callable[[str], str] = plain) -> list[str]:
    t, n = report.totals, report.noise
    busiest = (
        f"{show(n.busiest_entity)} ({n.busiest_entity_alerts} alerts)"
        if n.busiest_entity
        else "none"
    )
    return [
        f"alerts {t.alerts} ({_window(report)}, {n.days:g} day(s)); repeats {report.repeats}; "
        f"skipped {len(report.skipped)}",
        f"tickets {t.tickets} ({n.tickets_per_100_alerts:g} per 100 alerts); notes {t.notes}; "
        f"messages {t.messages}; pages {t.pages} ({n.pages_per_day:g} per day)",
        f"digest entries {t.digest_entries} in {t.digest_messages} digest message(s); "
        f"containment {t.containments} ({t.containment_approval} for approval, "
        f"{t.containment_automatic} automatic)",
        f"closed {t.closed}; ignored {t.ignored}; suppressed {t.suppressed}; "
        f"alert updates {t.alert_updates}; incident updates {t.incident_updates}; "
        f"errors {t.errors}",
        f"busiest entity: {busiest}",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line.rstrip()]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def text_report(report: Report, title: str = "Replay") -> str:
    lines = [f"{title}: policy {report.policy} (sha256 {report.policy_sha256[:12] or '-'})"]
    lines += ["  " + line for line in _noise_lines(report)]
    lines += ["", *_table(_RULE_HEADER, [[plain(c, 40) for c in r] for r in _rule_rows(report)])]
    if report.messages_per_channel:
        lines += ["", "messages per channel:"]
        lines += [f"  {plain(c)}: {n}" for c, n in report.messages_per_channel.items()]
    errors = [t for t in report.alerts if t.errors]
    if errors:
        lines += ["", f"alerts whose playbook failed ({len(errors)}):"]
        for t in errors[:20]:
            lines.append(f"  {plain(t.alert, 60)}: {plain(t.errors[0], 200)}")
    if report.skipped:
        lines += ["", f"skipped ({len(report.skipped)}):"]
        lines += [f"  {plain(str(s), 300)}" for s in report.skipped[:50]]
    return "\n".join(lines)


def text_comparison(comparison: Comparison, limit: int = 50) -> str:
    base, cand = comparison.base, comparison.candidate
    lines = [
        f"Base: {base.policy}; candidate: {cand.policy}; {base.totals.alerts} alerts, "
        f"{comparison.changed} treated differently",
        "",
        *_table(
            ["figure", "base", "candidate", "change"],
            [[k, f"{a:g}", f"{b:g}", f"{b - a:+g}"] for k, (a, b) in comparison.totals.items()],
        ),
    ]
    if comparison.differences:
        lines += ["", "alerts treated differently:"]
        for d in comparison.differences[:limit]:
            lines.append(f"  {plain(d.alert, 200)}  {plain(d.title, 60)}")
            for aspect, (a, b) in d.changes.items():
                lines.append(f"    {aspect}: {plain(a, 200)} -> {plain(b, 200)}")
        more = len(comparison.differences) - limit
        if more > 0:
            lines.append(f"  ... and {more} more (--json or --markdown lists them all)")
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown_report(report: Report, title: str = "Replay") -> str:
    lines = [
        f"# {title}: policy {md_text(report.policy)}",
        "",
        f"Policy sha256 `{report.policy_sha256[:12] or '-'}`; simulated in memory, nothing "
        "was written anywhere.",
        "",
        *(f"- {line}" for line in _noise_lines(report, md_text)),
        "",
        "## Per rule and playbook",
        "",
        *_md_table(
            _RULE_HEADER,
            [[md_text(r[0], 60), md_text(r[1], 60), *r[2:]] for r in _rule_rows(report)],
        ),
    ]
    if report.messages_per_channel:
        lines += ["", "## Messages per channel", ""]
        lines += _md_table(
            ["channel", "messages"],
            [[md_text(c), str(n)] for c, n in report.messages_per_channel.items()],
        )
    errors = [t for t in report.alerts if t.errors]
    if errors:
        lines += ["", "## Alerts whose playbook failed", ""]
        lines += _md_table(
            ["alert", "error"], [[md_text(t.alert), md_text(t.errors[0], 300)] for t in errors]
        )
    if report.skipped:
        lines += ["", "## Skipped inputs", ""]
        lines += _md_table(
            ["input", "problem"],
            [[md_text(s.where), md_text(s.problem, 300)] for s in report.skipped],  # fmt: skip
        )
    return "\n".join(lines)


def markdown_comparison(comparison: Comparison) -> str:
    lines = [
        markdown_report(comparison.base, "Base"),
        "",
        markdown_report(comparison.candidate, "Candidate"),
        "",
        "# Differences",
        "",
        f"{comparison.changed} of {comparison.base.totals.alerts} alerts treated differently.",
        "",
        *_md_table(
            ["figure", "base", "candidate", "change"],
            [[k, f"{a:g}", f"{b:g}", f"{b - a:+g}"] for k, (a, b) in comparison.totals.items()],
        ),
    ]
    if comparison.differences:
        lines += ["", "## Alerts treated differently", ""]
        rows = []
        for d in comparison.differences:
            for aspect, (a, b) in d.changes.items():
                rows.append([md_text(d.alert), md_text(d.title, 60), aspect, md_text(a),
                             md_text(b)])  # fmt: skip
        lines += _md_table(["alert", "title", "aspect", "base", "candidate"], rows)
    return "\n".join(lines)
