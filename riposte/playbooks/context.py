"""The steps a playbook composes: `Context`, handed to every playbook with the alert.

Each step is a Prefect task run of the response, named after the alert (``ticket graph-<id>``,
``notify graph-<id> slack``), and keyed by what it does (the alert revision, the ticket, the
channel, the text), never by the run: a Retry in the UI, a re-run after a worker was killed, or a
second worker answering the same alert finds the step done and gets it back Cached. A playbook
author never picks a key: calling `notify` for two channels sends two messages, and a retry of
the run sends none again. Steps go through the per-API rate limits of the clients below them.

Over 500 lines because `Context` is the public step API a playbook author reads, in one place;
the steps' retries, keys and calls live below it, in `riposte.tasks`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict

from riposte.alerts.approval import ApproverRef, ContainmentRequest
from riposte.alerts.containment import ActionKind, ContainmentPlanError, plan_actions
from riposte.alerts.incidents import (
    AlertTriageUpdate,
    IncidentClassification,
    IncidentDetermination,
    IncidentStatus,
    IncidentUpdate,
    IncidentWrite,
)
from riposte.alerts.matching import PlannedAction
from riposte.alerts.model import Alert, EntityType
from riposte.alerts.policy import Close, default_catalog
from riposte.alerts.response import Delivery, Ticket, ref_for
from riposte.alerts.throttle import Disposition, Outcome, digest_bucket
from riposte.blocks import BlockCache, DefenderCredentials, TicketingCredentials
from riposte.tasks.alerts import (
    AlertClosure,
    AlertTriage,
    AlertUpdate,
    close_alert,
    triage_alert,
    update_alert,
)
from riposte.tasks.approvals import run_page, start_containment
from riposte.tasks.digests import add_to_digest
from riposte.tasks.incidents import update_incident
from riposte.tasks.notify import Channel, load_channel, notify
from riposte.tasks.tickets import (
    add_note,
    comment_on_ticket,
    open_ticket,
    ticket_place,
    ticketing_block_name,
)

DEFAULT_DEFENDER = "riposte-defender"

containment_starter: Callable[[ContainmentRequest], str] = start_containment
"""How a containment request becomes a `contain_alert` run; `riposte playbook run` without a
local stack records the request instead (no approval flow serves its temporary server)."""


class NotificationsFailed(RuntimeError):
    """Some messages were not sent; the rest of the response was done."""


class Plan(BaseModel):
    """Where a response goes: block names only, never secrets. ``None`` means: as the policy
    says; a value overrides the policy for this run (a person re-running an alert elsewhere)."""

    model_config = ConfigDict(frozen=True)

    defender_block: str = DEFAULT_DEFENDER
    ticketing_block: str | None = None
    channel_blocks: tuple[str, ...] | None = None


class ActionResult(BaseModel):
    """What one policy action did for an alert: each step adds what it did."""

    rule: str
    playbook: str
    disposition: str
    reason: str
    ticket: Ticket | None = None
    ticket_created: bool = False
    alert_number: int | None = None
    """Set when the alert was added to an existing ticket: its number on that ticket."""
    deliveries: list[Delivery] = []
    digest: str | None = None
    """The digest bucket the alert went to."""
    closed: str | None = None
    """How the alert was closed at the source (classification: reason)."""
    containment: str | None = None
    containment_url: str | None = None
    """The page of the `contain_alert` run in the Prefect UI, where it waits for its decision;
    its outcome, once decided and done, is shown on this response run too."""
    alert_update: AlertUpdate | None = None
    incident: IncidentWrite | None = None
    """What was written on the alert's Defender incident."""
    notes: list[str] = []
    """Notes the playbook added to tickets, and lines it recorded for the report."""

    problems: list[str] = []
    """Steps that failed without stopping the response (an incident that could not be written),
    which end the run Failed once the rest is done."""

    @property
    def failures(self) -> list[str]:
        return [f"{d.channel}: {d.detail}" for d in self.deliveries if not d.delivered] + list(
            self.problems
        )

    @property
    def failure_message(self) -> str:
        """What the failed run says: the messages not sent, then the other steps not done."""
        return failure_message([self])


# Each reason in a failed run's message is cut to this length, so that the message (and a
# batch's table row, which has a bound of its own) names every channel not reached.
REASON_CHARS = 160


def _cut(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def failure_message(results: Sequence[ActionResult]) -> str:
    unsent = [
        f"{d.channel}: {_cut(d.detail)}" for r in results for d in r.deliveries if not d.delivered
    ]
    undone = [p for r in results for p in r.problems]
    parts = []
    if unsent:
        parts.append("messages not sent: " + "; ".join(unsent))
    if undone:
        parts.append("not done: " + "; ".join(undone))
    return ". ".join(parts)


class ResponseContext:
    """What one alert's response goes through: the plan and its blocks (loaded once per run,
    when ``blocks`` is shared by a batch)."""

    def __init__(self, plan: Plan, blocks: BlockCache | None = None) -> None:
        self.plan = plan
        self.blocks = blocks or BlockCache()
        self.defender = self.blocks.load(DefenderCredentials, plan.defender_block)

    def ticketing(self, action: PlannedAction) -> TicketingCredentials:
        name = ticketing_block_name(action.ticket, self.plan.ticketing_block)
        if name is None:
            raise ValueError(
                f"rule {action.rule!r}: the {action.playbook} playbook files a ticket but the "
                "rule names no ticket system (`ticket: {system: ...}` here or in defaults)"
            )
        return self.blocks.load(TicketingCredentials, name)

    def channels(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        if not wanted:
            return ()
        override = self.plan.channel_blocks
        return wanted if override is None else override

    def channel(self, name: str) -> Channel:
        return self.blocks.load(Block, name, load_channel)  # type: ignore[return-value]


class TicketStep(BaseModel):
    """The ticket an alert went to, and how."""

    model_config = ConfigDict(frozen=True)

    ticket: Ticket
    correlation_key: str
    is_new: bool
    """True when this alert's response opened it (notify then); False when the alert joined a
    ticket of its group, throttle slot or incident as a numbered note."""
    alert_number: int | None = None
    """When the alert joined an open ticket: its number there."""


def _reason(state: object) -> str:
    message = getattr(state, "message", None) or "failed"
    return str(message)[:300]


def _joined(outcome: Outcome) -> str:
    """Why an alert joined a ticket that another alert's response opened at the same moment."""
    if outcome.key_values:
        same = ", ".join(f"{k}={v}" for k, v in outcome.key_values.items())
        return f"same {same} as the alert that opened it (rule {outcome.rule})"
    if outcome.group_key and outcome.group_key.startswith("riposte-incident-"):
        return f"same Defender incident as the alert that opened it (rule {outcome.rule})"
    return f"same group as the alert that opened it (rule {outcome.rule})"


def registry_declares_digest(name: str) -> bool:
    # Through the policy's catalog, which the registry fills: the registry imports the built-in
    # playbooks, which import this module.
    found = default_catalog().get(name)
    return bool(found and found.uses_digest)


def public_ips(alert: Alert) -> list[str]:
    """The alert's IP entities that are global addresses (never private, loopback, link-local,
    reserved or multicast), in order, without repeats."""
    found: list[str] = []
    for entity in alert.entities_of(EntityType.IP):
        try:
            address = ipaddress.ip_address(entity.value.strip())
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_global and not address.is_multicast and str(address) not in found:
            found.append(str(address))
    return found


class Context:
    """The steps of one alert's response, for the playbook the policy chose.

    ``alert`` is the normalized alert (hostile text: pass it to steps, never build markup or
    URLs from it); ``action`` is what the policy's rule asks for with the defaults filled in
    (priority, ticket target, channels, templates, containment plan); ``outcome`` is what the
    throttles, incident grouping and suppression windows decided for it.
    """

    def __init__(
        self,
        response: ResponseContext,
        alert: Alert,
        action: PlannedAction,
        outcome: Outcome,
        open_tickets: dict[str, Ticket] | None = None,
    ) -> None:
        self.response = response
        self.alert = alert
        self.action = action
        self.outcome = outcome
        self._open_tickets = open_tickets or {}
        self._ticket_step: TicketStep | None = None
        self.result = ActionResult(
            rule=outcome.rule,
            playbook=action.playbook,
            disposition=str(outcome.disposition),
            reason=outcome.reason,
        )

    @property
    def rule(self) -> str:
        return self.action.rule

    @property
    def defender(self) -> DefenderCredentials:
        """The Defender credentials block of this response (for a playbook's own tasks)."""
        return self.response.defender

    # --- tickets ----------------------------------------------------------------------------

    def ticket(self) -> TicketStep:
        """Find or create the alert's ticket as the policy says: its own, its incident's, or
        its throttle slot's; when the throttle or the incident already has an open ticket, the
        alert is added to it as a numbered note instead. Repeated calls return the same ticket.

        Example:
            ```python
            opened = ctx.ticket()
            if opened.is_new:
                ctx.notify(ticket=opened.ticket)
            ```
        """
        if self._ticket_step is not None:
            return self._ticket_step
        if not self.action.opens_ticket:
            raise ValueError(
                f"the {self.action.playbook} playbook is not declared `opens_ticket=True`: "
                "its rules cannot say where tickets go"
            )
        step = self._take_ticket()
        self.result.ticket = step.ticket
        self.result.alert_number = step.alert_number
        self._ticket_step = step
        return step

    def _take_ticket(self) -> TicketStep:
        """The ticket as the outcome says: opened, found, or joined as a note."""
        action, outcome, alert = self.action, self.outcome, self.alert
        ticketing = self.response.ticketing(action)
        if outcome.disposition == Disposition.TICKET and outcome.ticket_correlation_key:
            opened = open_ticket(
                ticketing, alert, action, outcome.ticket_correlation_key, outcome.group_key
            )
            if opened.opened_by == alert.correlation_key:
                step = TicketStep(
                    ticket=opened.ticket, correlation_key=opened.correlation_key, is_new=True
                )
                self.result.ticket_created = opened.ticket.created
            else:
                # Another alert's response opened this ticket a moment before (both decided at
                # once): this alert joins it as a note, and the channels heard of it already.
                note = comment_on_ticket(
                    ticketing, alert, opened.ticket, _joined(outcome), action.templates
                )
                step = TicketStep(
                    ticket=opened.ticket,
                    correlation_key=opened.correlation_key,
                    is_new=False,
                    alert_number=note.alert_number,
                )
                self.result.disposition = str(Disposition.COMMENT)
        elif outcome.disposition == Disposition.COMMENT and outcome.ticket is not None:
            found = self._open_tickets.get(outcome.ticket.correlation_key)
            if found is None:  # decided from a ledger that could not show the ticket: look again
                project = ticket_place(action.ticket, ticketing)["project"]
                found = ticketing.get_client().find(outcome.ticket.correlation_key, project=project)
                if found is None:
                    raise LookupError(f"ticket {outcome.ticket.key} of {outcome.rule} is gone")
            note = comment_on_ticket(ticketing, alert, found, outcome.reason, action.templates)
            step = TicketStep(
                ticket=found,
                correlation_key=outcome.ticket.correlation_key,
                is_new=False,
                alert_number=note.alert_number,
            )
        else:
            raise ValueError(f"{outcome.playbook} cannot carry out a {outcome.disposition} outcome")
        return step

    def note(self, ticket: Ticket, text: str) -> bool:
        """Add ``text`` to ``ticket`` as a note, once (the same text for the same alert is not
        added twice); returns False when it was there already.

        Example:
            ```python
            ctx.note(opened.ticket, "Source IP is on the partner list: not blocked")
            ```
        """
        added = add_note(self.response.ticketing(self.action), self.alert, ticket, text)
        self.result.notes.append(f"note on {ticket.key}: {text[:200]}")
        return added

    # --- messages ---------------------------------------------------------------------------

    def _wanted(self, channels: Sequence[str] | str | None) -> tuple[str, ...]:
        """The channels a `notify` call names (default: the rule's)."""
        if isinstance(channels, str):
            return (channels,)
        if channels is None:
            return self.action.channels
        return tuple(channels)

    def notify(
        self,
        channels: Sequence[str] | str | None = None,
        *,
        ticket: Ticket | None = None,
    ) -> list[Delivery]:
        """Post the alert (with the ticket link, if given) to ``channels`` (block references;
        default: the rule's channels), with the rule's templates. A channel that fails is
        reported, the others are still sent, and the run ends Failed naming it once the rest
        of the response is done.

        Example:
            ```python
            ctx.notify("teams-workflow-webhook/riposte-teams", ticket=opened.ticket)
            ```
        """
        wanted = self._wanted(channels)
        subject = self._ticket_step.correlation_key if self._ticket_step else None
        deliveries = []
        for name in self.response.channels(wanted):
            try:
                channel = self.response.channel(name)
            except Exception as exc:  # a missing block must not hide the other channels
                deliveries.append(Delivery(channel=name, delivered=False, detail=str(exc)[:300]))
                continue
            state = notify(
                channel, self.alert, ticket, self.action.templates, subject=subject,
                return_state=True,
            )  # fmt: skip
            if state.is_completed():
                deliveries.append(state.result())
            else:
                deliveries.append(Delivery(channel=name, delivered=False, detail=_reason(state)))
        self.result.deliveries.extend(deliveries)
        return deliveries

    # --- the alert in Defender --------------------------------------------------------------

    def update_alert(self, ticket: Ticket | None = None) -> AlertUpdate:
        """Mark the alert in progress in Defender, with a comment linking ``ticket`` (where the
        API keeps comments), each once.

        Example:
            ```python
            ctx.update_alert(opened.ticket)
            ```
        """
        update = update_alert(self.response.defender, self.alert, ticket)
        self.result.alert_update = update
        return update

    def close_alert(
        self, classification: Literal["benign", "false_positive"], reason: str
    ) -> AlertClosure:
        """Close the alert at its source as benign or a false positive, with ``reason``, once.

        Example:
            ```python
            ctx.close_alert("false_positive", "Our own load test")
            ```
        """
        close = Close(classification=classification, reason=reason)  # checks the reason
        closure = close_alert(
            self.response.defender, self.alert, close.classification, close.reason
        )
        self.result.closed = f"{closure.classification}: {closure.reason}"
        return closure

    def triage_alert(
        self,
        *,
        assign_to: str | None = None,
        classification: IncidentClassification | None = None,
        determination: IncidentDetermination | None = None,
    ) -> AlertTriage | None:
        """Set the alert's owner and verdict at its source (Graph's spelling; Defender for
        Endpoint gets its own), each only where it differs, once: what the rule's `triage:`
        asks, with these arguments over it. Fields its API cannot set (Defender for Cloud
        Apps, Defender for Cloud) are reported in ``unsupported``. None when nothing is asked,
        or when the write failed: that is reported, the steps after it still run, and the run
        ends Failed naming it.

        Example:
            ```python
            ctx.triage_alert(assign_to="soc-api@example.com", classification="truePositive")
            ```
        """
        wanted = self._triage_wanted(assign_to, classification, determination)
        if not wanted:
            return None
        done = self._triage_write(wanted)
        if done is None:
            return None
        written = ", ".join(done.written) or "nothing new"
        self.result.notes.append(f"alert triage: set {written}")
        for field in done.unsupported:
            self.result.notes.append(f"alert triage: not set, {field}")
        return done

    def _triage_write(self, wanted: dict[str, str]) -> AlertTriage | None:
        # Like the incident's: a refusal (a retired determination on Defender for Endpoint, a
        # permission the app lacks) must not stop what follows.
        state = triage_alert(self.response.defender, self.alert, wanted, return_state=True)
        if not state.is_completed():
            self.result.problems.append(f"alert triage not written: {_reason(state)}")
            return None
        done: AlertTriage = state.result()
        return done

    def _triage_wanted(
        self,
        assign_to: str | None,
        classification: IncidentClassification | None,
        determination: IncidentDetermination | None,
    ) -> dict[str, str]:
        """The alert fields to set (Graph's names): the arguments over the rule's `triage:`."""
        # Checked here, before anything is sent: a typo is the playbook's bug, named as such.
        checked = AlertTriageUpdate(
            assign_to=assign_to, classification=classification, determination=determination
        ).merged_over(self.action.triage)
        return {
            k: v
            for k, v in (
                ("assignedTo", checked.assign_to),
                ("classification", checked.classification),
                ("determination", checked.determination),
            )
            if v is not None
        }

    # --- the incident in Defender ------------------------------------------------------------

    def update_incident(
        self,
        *,
        tags: Sequence[str] = (),
        assign_to: str | None = None,
        status: IncidentStatus | None = None,
        classification: IncidentClassification | None = None,
        determination: IncidentDetermination | None = None,
        comment: str | None = None,
    ) -> IncidentWrite | None:
        """Write on the alert's Defender incident what the rule's `incident:` asks, with these
        arguments over it: ``tags`` added to the incident's own (never replacing them), owner,
        status and verdict where they differ, ``comment`` once. Keyed by the incident and the
        change: several alerts of one incident write it once. None when the alert has no
        incident or nothing is asked, or when the write failed: that is reported, the steps
        after it still run, and the run ends Failed naming it.

        Example:
            ```python
            ctx.update_incident(tags=["api-abuse"], assign_to="soc-api@example.com")
            ```
        """
        asked = IncidentUpdate(
            tags=tuple(tags),
            assign_to=assign_to,
            status=status,
            classification=classification,
            determination=determination,
            comment=comment,
        ).merged_over(self.action.incident)
        if self.alert.incident_id is None or asked == IncidentUpdate():
            return None
        return self._write_incident(str(self.alert.incident_id), asked)

    def _write_incident(self, incident_id: str, asked: IncidentUpdate) -> IncidentWrite | None:
        # A failure here (a permission the app lacks, Graph down) must not stop what follows,
        # containment above all: it is reported, and fails the run once the rest is done.
        state = update_incident(self.response.defender, incident_id, asked, return_state=True)
        if not state.is_completed():
            self.result.problems.append(f"incident {incident_id} not written: {_reason(state)}")
            return None
        write: IncidentWrite = state.result()
        self.result.incident = write
        return write

    # --- digests ----------------------------------------------------------------------------

    def add_to_digest(self) -> str:
        """Put the alert in the digest the rule names (``digest`` here or in the defaults):
        one summary message per channel per period, posted by the scheduled digest flow.
        Returns the bucket's key.

        Example:
            ```python
            if alert.severity == "low":
                ctx.add_to_digest()
            ```
        """
        bucket = self.outcome.digest
        if bucket is None:
            if self.action.digest is None:
                declared = registry_declares_digest(self.action.playbook)
                raise ValueError(
                    f"rule {self.rule!r}: no digest to add to: "
                    + (
                        "give `digest: {channel, period}` in the rule or in defaults"
                        if declared
                        else f"declare the {self.action.playbook} playbook uses_digest=True"
                    )
                )
            bucket = digest_bucket(self.action.digest, self.outcome.at)
        added = add_to_digest(self.alert, bucket, self.rule)
        self.result.digest = added.key
        if self.result.ticket is None:
            self.result.disposition = str(Disposition.DIGEST)
        return added.key

    # --- containment ------------------------------------------------------------------------

    def request_containment(
        self,
        actions: Iterable[ActionKind | str] | None = None,
        *,
        only_targets: Iterable[str] | None = None,
        ticket: Ticket | None = None,
    ) -> str:
        """Start the approval-gated containment the rule names (``containment``: actions,
        approvers, timeout): one `contain_alert` run per ticket and set of actions, which asks
        each approver through their own signed links, waits suspended, and contains only on a
        yes (or at once when the policy says ``automatic``). ``actions`` narrows the rule's
        actions; ``only_targets`` keeps only those targets (IP addresses, machine ids, UPNs).
        Returns what happened, for the run report.

        Example:
            ```python
            ctx.request_containment(["block_ip"], only_targets=public_ips(alert))
            ```
        """
        plan = self.action.containment
        if plan is None:
            outcome = "none (the rule names no containment actions)"
            self.result.containment = outcome
            return outcome
        kinds = [ActionKind(k) for k in actions] if actions is not None else list(plan.actions)
        beyond = [str(k) for k in kinds if k not in plan.actions]
        if beyond:
            # The policy says what may be contained (and whether without approval): a playbook
            # narrows it, never widens it.
            raise ValueError(
                f"rule {self.rule!r}: the {self.action.playbook} playbook asked for "
                f"{', '.join(beyond)}, which the rule's containment does not name "
                f"(it names {', '.join(str(a) for a in plan.actions)})"
            )
        targets = set(only_targets) if only_targets is not None else None
        try:
            planned = plan_actions(self.alert, kinds, comment=f"Riposte, policy rule {self.rule}")
        except ContainmentPlanError as exc:
            outcome = f"not possible: {exc}"
            self.result.containment = outcome
            return outcome
        if targets is not None:
            planned = [a for a in planned if a.target in targets]
        if not planned:
            what = ", ".join(str(k) for k in kinds) or "nothing"
            outcome = "nothing to contain: the alert names no target for " + what
            self.result.containment = outcome
            return outcome
        response = self.response
        request = ContainmentRequest(
            alert=ref_for(self.alert),
            alert_title=self.alert.title,
            severity=str(self.alert.severity),
            rule=self.rule,
            actions=tuple(planned),
            approvers=tuple(
                ApproverRef(name=a.name, channels=a.channels, address=a.address)
                for a in plan.approvers
            ),
            timeout_seconds=int(plan.timeout.total_seconds()),
            on_timeout=plan.on_timeout,
            timeout_channels=plan.timeout_channels,
            automatic=plan.automatic,
            defender_block=response.plan.defender_block,
            ticketing_block=ticketing_block_name(self.action.ticket, response.plan.ticketing_block),
            ticket=ticket if ticket is not None else self.result.ticket,
        )
        run_id = self._start_containment(request)
        page = run_page(run_id)
        if plan.automatic:
            outcome = "started without approval (policy says automatic)"
        else:
            names = ", ".join(a.name for a in plan.approvers)
            outcome = f"awaiting approval from {names}"
        outcome += f": run {page or run_id}"
        self.result.containment = outcome
        self.result.containment_url = page
        return outcome

    def _start_containment(self, request: ContainmentRequest) -> str:
        """Start the `contain_alert` run of ``request``; its id."""
        return containment_starter(request)

    # --- the report -------------------------------------------------------------------------

    def record(self, text: str) -> None:
        """Add a line to the response's report (the run's artifact and `playbook run`)."""
        self.result.notes.append(text[:500])
