"""The report of one replay: what the policy did with each alert, the counts per rule and
playbook and in total, the noise figures; `figures`, the totals as one flat set of numbers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from riposte.playbooks.replay.inputs import Skipped


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


# `RuleStats` and `Totals` share most counts but stay two models: a rule's ``messages`` are per
# channel, the totals' a number beside figures of their own, and each field order is its JSON's.
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


def figures(report: Report) -> dict[str, float]:
    figures: dict[str, float] = {k: float(v) for k, v in report.totals.model_dump().items()}
    figures["skipped"] = float(len(report.skipped))
    figures["tickets_per_100_alerts"] = report.noise.tickets_per_100_alerts
    figures["pages_per_day"] = report.noise.pages_per_day
    return figures
