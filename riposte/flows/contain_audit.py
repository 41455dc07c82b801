"""The audit of a containment run and how it reads to people: the decision and the audit's rows,
the Resume form's text, the summary and the outcome, the artifacts' keys, descriptions and
markdown. Alert text is shown as text (code spans), never as markup, links or mentions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from riposte.alerts.approval import ApprovalChoice, ContainmentRequest, Via
from riposte.alerts.plain import code_span
from riposte.tasks.approvals import run_page


class Decided(BaseModel):
    """The decision the run acts on, and how far it can be trusted."""

    model_config = ConfigDict(frozen=True)

    decision: ApprovalChoice
    approver: str
    via: Via | Literal["staging"]
    reason: str
    at: datetime

    def describe(self) -> str:
        how = {
            "staging": "as the staging run was told (riposte replay --stage --approve)",
            "link": "by signed link",
            "timeout": "by the policy's default outcome (nobody answered in time)",
            "automatic": "automatically (the policy says so)",
            "ui": "in the Prefect UI form",
        }[self.via]
        verb = "approved" if self.decision == "approve" else "rejected"
        why = f": {self.reason}" if self.reason else ""
        return f"{verb} by {self.approver} {how}{why}"


class AuditRow(BaseModel):
    at: str
    who: str
    what: str
    parameters: str
    result: str


@dataclass
class Audit:
    """The audit table of one containment run, a row per step. A step's parameters are the
    request's actions, unless it names its own (an action's)."""

    request: ContainmentRequest
    rows: list[AuditRow] = field(default_factory=list)

    def add(
        self, at: datetime, who: str, what: str, result: str, parameters: str | None = None
    ) -> None:
        if parameters is None:
            parameters = "; ".join(a.describe() for a in self.request.actions)
        self.rows.append(
            AuditRow(at=stamp(at), who=who, what=what, parameters=parameters, result=result)
        )

    def decision(self, decided: Decided) -> None:
        self.add(decided.at, decided.approver, decided.decision, decided.describe())


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def md(text: str, limit: int = 300, *, cell: bool = False) -> str:
    """``text`` shown as itself in markdown (`code_span`): a code span, on one line, control
    and bidirectional characters escaped, cut at ``limit``; in a table ``cell``, no pipe of it
    ends the cell."""
    return code_span(text, limit, cell=cell) or "``"


def link(text: str, url: str) -> str:
    """A link of ours (a Prefect page, a ticket), or the address as text if not http(s)."""
    if not url.startswith(("https://", "http://")):
        return md(url)
    return f"[{text}]({url.replace('(', '%28').replace(')', '%29').replace(' ', '%20')})"


def resume_description(request: ContainmentRequest, deadline: datetime) -> str:
    """What the Resume form of a suspended containment run says (markdown): the actions and
    their targets, the alert, the ticket, the approvers asked and the deadline. Alert text is
    shown as text (code spans), never as markup, links or mentions."""
    ref = request.alert
    lines = [
        "**Containment waiting for approval**",
        "",
        "Actions:",
        *(f"- {md(a.describe())}" for a in request.actions[:20]),
    ]
    if len(request.actions) > 20:
        lines.append(f"- and {len(request.actions) - 20} more (see the run's parameters)")
    lines += [
        "",
        f"- Alert: {md(ref.source, 40)} {md(ref.alert_id, 120)}, "
        f"severity {md(request.severity, 40)}",
        f"- Title: {md(request.alert_title, 200)}",
        f"- Rule: {md(request.rule, 120)}",
    ]
    if request.ticket is not None:
        ticket = request.ticket
        lines.append(
            f"- Ticket: {md(ticket.system, 40)} {md(ticket.key, 60)} {link('open', ticket.url)}"
        )
    asked = ", ".join(
        f"{md(a.name, 120)} ({', '.join(md(c, 120) for c in a.channels) or 'no channel'})"
        for a in request.approvers
    )
    lines += [
        f"- Approvers asked, each by links of their own: {asked}",
        f"- Deadline: {stamp(deadline)}; if nobody answers by then, the policy's default "
        f"outcome applies: **{request.on_timeout}**",
        "",
        "To decide here: `decision` approve runs the actions, reject does not; `reason` goes "
        "in the audit; `approver` is your name, recorded as typed and marked *identity not "
        "proven* (the Prefect UI does not say who you are). Leave `proof` empty: it is for "
        "approval links.",
    ]
    return "\n".join(lines)


def summary_of(
    request: ContainmentRequest, decided: Decided, executed: list[str], failed: list[str]
) -> str:
    """The containment in a sentence or three: the request, the decision, what was done."""
    parts = [f"Containment ({request.describe()}) {decided.describe()}."]
    if decided.decision == "approve":
        if executed:
            parts.append("Done: " + "; ".join(executed) + ".")
        if failed:
            parts.append("FAILED: " + "; ".join(failed) + ".")
    else:
        parts.append("Nothing was executed.")
    return " ".join(parts)


def outcome_of(decided: Decided, executed: list[str], failed: list[str]) -> str:
    """The outcome in a few words: approved and done, rejected, no answer in time..."""
    if decided.via == "automatic":
        verdict = "contained without approval (policy says automatic)"
    else:
        verdict = "approved" if decided.decision == "approve" else "rejected"
        if decided.via == "timeout":
            verdict = f"no answer in time: {verdict} by the policy's default"
    if decided.decision != "approve":
        return f"{verdict}, nothing executed"
    if failed:
        return f"{verdict}, FAILED ({len(failed)} of {len(executed) + len(failed)} actions)"
    return f"{verdict}, done"


def artifact_key(request: ContainmentRequest, prefix: str = "containment") -> str:
    """``<prefix>-<source>-<alert id>-<8 hex>``, as Prefect takes keys (lowercase letters,
    digits, dashes). The hex, of the request's key, keeps apart the requests that share an
    alert (or a ticket): several rules, or several sets of actions, each its own artifact."""
    name = f"{prefix}-{request.alert.source}-{request.alert.alert_id}".lower()
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", name)).strip("-")
    return f"{slug[:110].rstrip('-')}-{hashlib.sha256(request.key.encode()).hexdigest()[:8]}"


def artifact_description(request: ContainmentRequest, what: str) -> str:
    """An artifact's description (rendered as markdown): the alert, its title as text."""
    ref = request.alert
    return (
        f"Containment of {md(ref.source, 40)} alert {md(ref.alert_id, 120)}: {what}. "
        f"Alert: {md(request.alert_title, 150)}"
    )[:500]


def outcome_markdown(
    request: ContainmentRequest, run_id: UUID, outcome: str, summary: str, rows: list[AuditRow]
) -> str:
    """The containment's outcome as the response run that asked shows it (markdown): the
    alert's text and the audit's as text, the containment run's page the one link."""
    ref = request.alert
    page = run_page(run_id)
    lines = [
        f"# Containment of {md(ref.source, 40)} alert {md(ref.alert_id, 120)}: {outcome}",
        "",
        f"Alert: {md(request.alert_title, 200)}",
        "",
        f"Outcome: {md(summary, 2000)}",
    ]
    if rows:
        # The audit's rows, narrower than the containment run's table (its times are there).
        lines += ["", "| what | who | result |", "|---|---|---|"]
        lines += [
            f"| {md(r.what, 300, cell=True)} | {md(r.who, 200, cell=True)} "
            f"| {md(r.result, 500, cell=True)} |"
            for r in rows
        ]
    if page:
        lines += ["", f"{link('Open the containment run', page)}: its audit and its logs."]
    return "\n".join(lines)
