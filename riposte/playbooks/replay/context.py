"""`SimulatedContext`: the `Context` a playbook runs with in a replay, whose steps record in the
`World` what they would do instead of doing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from riposte.alerts.approval import ContainmentRequest
from riposte.alerts.incidents import IncidentUpdate, IncidentWrite
from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert
from riposte.alerts.policy import Close
from riposte.alerts.response import Delivery, Ticket, response_revision
from riposte.alerts.throttle import Disposition, Outcome, digest_bucket
from riposte.playbooks.context import Context, Plan, TicketStep, _joined
from riposte.playbooks.replay.world import World
from riposte.tasks.alerts import AlertClosure, AlertTriage, AlertUpdate


class SimulationUnsupported(RuntimeError):
    """A playbook reached past the steps of `Context` (its own tasks, the Defender block): a
    simulated replay cannot show that; a staging run (`riposte replay --stage`) does."""


class _NoBlocks:
    def __getattr__(self, name: str) -> Any:
        raise SimulationUnsupported(
            "a simulated replay loads no block; what the playbook does with one is seen in a "
            "staging run (riposte replay --stage)"
        )


class SimulatedResponse:
    """A `ResponseContext` without blocks: a simulated step never reaches a system."""

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
