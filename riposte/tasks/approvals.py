"""Tasks of the approval step: send each approver their own signed links, tell the timeout
channels, and write the audit trail on the alert and the ticket (each only once)."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for
from pydantic import BaseModel, ConfigDict

from riposte.alerts.approval import (
    ApprovalChoice,
    ApprovalKeys,
    ApproverRef,
    ContainmentRequest,
    LinkClaims,
)
from riposte.alerts.messages import SLACK_SECTION_LIMIT, EmailContent
from riposte.alerts.model import Alert
from riposte.alerts.response import Delivery, Ticket
from riposte.alerts.templating import slack_escape, teams_text
from riposte.blocks.defender import DefenderCredentials
from riposte.blocks.email import EmailSmtp
from riposte.blocks.signing_keys import load_approval_keys
from riposte.blocks.ticketing import TicketingCredentials
from riposte.settings import CONTAIN_DEPLOYMENT, get_settings
from riposte.tasks._cache import cache_key
from riposte.tasks._common import external_call
from riposte.tasks.notify import Channel, channel_label, load_channel, post_chat
from riposte.tasks.runs import book_approval_sweep


class ApprovalRequested(BaseModel):
    """Where one approver's links went, and until when they work."""

    model_config = ConfigDict(frozen=True)

    approver: str
    deliveries: list[Delivery]
    expires: datetime

    @property
    def reached(self) -> bool:
        return any(d.delivered for d in self.deliveries)


def approval_deadline(request: ContainmentRequest, now: datetime | None = None) -> datetime:
    """When the links of ``request`` stop working: one deadline for every approver, in whole
    seconds (what a link carries), so that a link says "expired" exactly when the sweep may
    apply the default outcome."""
    start = (now or datetime.now(UTC)).replace(microsecond=0)
    return start + timedelta(seconds=request.timeout_seconds)


def approval_link(keys: ApprovalKeys, claims: LinkClaims) -> str:
    return f"{get_settings().approval_base_url}/approvals/{keys.sign(claims)}"


def _links(
    keys: ApprovalKeys, request: ContainmentRequest, run_id: UUID, approver: str, expires: datetime
) -> dict[ApprovalChoice, str]:
    links: dict[ApprovalChoice, str] = {}
    for decision in ("approve", "reject"):
        claims = LinkClaims.new(
            run=run_id,
            request=request.key,
            params=request.params,
            approver=approver,
            decision=decision,
            expires=expires,
        )
        links[claims.decision] = approval_link(keys, claims)
    return links


def _summary(request: ContainmentRequest, *, ticket: bool = True) -> list[str]:
    lines = [
        f"Alert: {request.alert_title} ({request.severity}, {request.alert.source} "
        f"{request.alert.alert_id})",
        f"Rule: {request.rule}",
    ]
    if request.ticket is not None and ticket:
        lines.append(f"Ticket: {request.ticket.key} {request.ticket.url}")
    lines.append("Actions:")
    lines.extend(f"  - {a.describe()}" for a in request.actions)
    return lines


def approval_message(
    channel: Channel,
    request: ContainmentRequest,
    approver: str,
    links: dict[ApprovalChoice, str],
    expires: datetime,
) -> dict[str, Any] | EmailContent:
    """The message carrying one approver's links, in the channel's own form."""
    title = f"Approval needed: containment for {request.alert_title}"[:250]
    deadline = f"{expires:%Y-%m-%d %H:%M} UTC"
    facts = _summary(request)
    note = (
        f"These links are for {approver} alone and work once, until {deadline}. "
        f"If nobody answers by then: {request.on_timeout}."
    )
    if isinstance(channel, EmailSmtp):
        text = "\n".join(
            [title, "", *facts, "", f"Approve: {links['approve']}", f"Reject: {links['reject']}"]
            + ["", note]
        )
        items = "".join(f"<li>{html.escape(a.describe())}</li>" for a in request.actions)
        body = (
            f"<p><b>{html.escape(title)}</b></p>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in facts[:3])
            + f"<ul>{items}</ul>"
            + f'<p><a href="{html.escape(links["approve"])}">Approve</a> &middot; '
            + f'<a href="{html.escape(links["reject"])}">Reject</a></p>'
            + f"<p>{html.escape(note)}</p>"
        )
        return EmailContent(subject=title, text=text, html=body)
    if channel.kind == "slack":
        ours = f"<{links['approve']}|Approve> · <{links['reject']}|Reject>"
        return _slack_message(
            title, _summary(request, ticket=False), note, _ticket_link(request) + ours
        )
    card_actions = [
        {"type": "Action.OpenUrl", "title": "Approve", "url": links["approve"]},
        {"type": "Action.OpenUrl", "title": "Reject", "url": links["reject"]},
    ]
    return _teams_card(title, facts + [note], card_actions)


def _ticket_link(request: ContainmentRequest) -> str:
    """The ticket as a Slack link of ours (its key escaped), then a line break; or nothing."""
    ticket = request.ticket
    if ticket is None:
        return ""
    return f"Ticket: <{ticket.url}|{slack_escape(ticket.key)}>\n"


def _slack_message(
    title: str, lines: list[str], note: str | None = None, links: str | None = None
) -> dict[str, Any]:
    """Blocks whose alert text Slack shows as written: escaped, defanged, and in mrkdwn objects
    marked verbatim; the only links are ``links`` (ours). The fallback text is the title."""

    def section(text: str) -> dict[str, Any]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}

    body = "\n".join([f"*{slack_escape(title)}*", *(slack_escape(line) for line in lines)])
    blocks = [section(body[:SLACK_SECTION_LIMIT])]
    if links:
        blocks.append(section(links))
    if note:
        context = {"type": "mrkdwn", "text": slack_escape(note), "verbatim": True}
        blocks.append({"type": "context", "elements": [context]})
    return {"text": slack_escape(title), "blocks": blocks}


def _teams_card(title: str, lines: list[str], actions: list[dict[str, str]]) -> dict[str, Any]:
    # Text runs, never markdown: the title and facts carry the alert's (hostile) text.
    body: list[dict[str, Any]] = [teams_text(title, weight="Bolder")]
    body.extend(teams_text(line) for line in lines)
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        content["actions"] = actions
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": content,
            }
        ],
    }


def _post(channel: Channel, message: dict[str, Any] | EmailContent, to: str | None) -> Delivery:
    if isinstance(channel, EmailSmtp):
        assert isinstance(message, EmailContent)
        channel.get_client().send(message, [to] if to else None)
        return Delivery(channel=to or channel_label(channel), delivered=True)
    assert isinstance(message, dict)
    return post_chat(channel, message)


def _request_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    request: ContainmentRequest = params["request"]
    approver: ApproverRef = params["approver"]
    return cache_key("approval-request", request.key, str(params["run_id"]), approver.name)


@external_call(_request_key, name="ask {approver.name}")
def request_approval(
    request: ContainmentRequest,
    approver: ApproverRef,
    run_id: UUID,
    expires: datetime,
) -> ApprovalRequested:
    """Send ``approver`` their own approve and reject links on each of their channels.

    A channel that fails is reported, not fatal: the other channels, the other approvers and
    the Prefect UI can still decide. Keyed by run and approver: a resumed or retried run never
    sends the links again. The approval sweep is booked for ``expires`` (once per run).
    """
    book_approval_sweep(run_id, expires)
    keys = load_approval_keys()
    links = _links(keys, request, run_id, approver.name, expires)
    deliveries = []
    for name in approver.channels:
        try:
            channel = load_channel(name)
            label = channel_label(channel)
            if isinstance(channel, EmailSmtp):
                label = approver.address or label
            sent = _post(
                channel,
                approval_message(channel, request, approver.name, links, expires),
                approver.address,
            )
            deliveries.append(sent.model_copy(update={"channel": label}))
        except Exception as exc:  # reported in the audit and the run log
            deliveries.append(Delivery(channel=name, delivered=False, detail=_why(exc)))
    return ApprovalRequested(approver=approver.name, deliveries=deliveries, expires=expires)


def _why(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


def _timeout_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    request: ContainmentRequest = params["request"]
    return cache_key("approval-timeout", request.key, str(params["run_id"]), params["channel"])


@external_call(_timeout_key, name="timeout notice to {channel}")
def notify_timeout(request: ContainmentRequest, run_id: UUID, channel: str) -> Delivery:
    """Tell a timeout channel that nobody answered and what the default outcome did."""
    target = load_channel(channel)
    title = f"No answer in time: containment for {request.alert_title}"[:250]
    outcome = (
        f"Nobody answered within {request.timeout_seconds // 60} min; the policy's default "
        f"outcome applies: {request.on_timeout}."
    )
    lines = [*_summary(request), outcome]
    message: dict[str, Any] | EmailContent
    if isinstance(target, EmailSmtp):
        text = "\n".join([title, "", *lines])
        message = EmailContent(
            subject=title, text=text, html="".join(f"<p>{html.escape(x)}</p>" for x in lines)
        )
    elif target.kind == "slack":
        facts = [*_summary(request, ticket=False), outcome]
        message = _slack_message(title, facts, links=_ticket_link(request).strip() or None)
    else:
        message = _teams_card(title, lines, [])
    return _post(target, message, None)


def audit_marker(request: ContainmentRequest, stage: str) -> str:
    return f"[riposte containment {request.params[:12]} {stage}]"


def _alert_note_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    alert: Alert = params["alert"]
    return cache_key("containment-alert-note", alert.correlation_key, params["marker"])


@external_call(_alert_note_key, name="audit on alert {alert.source}-{alert.id}")
def comment_alert(defender: DefenderCredentials, alert: Alert, text: str, marker: str) -> bool:
    """Add the audit ``text`` to the alert once (where the API keeps comments)."""
    client = defender.source_client(alert.source)
    if client.has_comment(alert.id, marker):
        return False
    return client.comment(alert.id, f"{marker} {text}")


def _ticket_note_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    ticket: Ticket = params["ticket"]
    return cache_key("containment-ticket-note", ticket.system, ticket.key, params["marker"])


@external_call(_ticket_note_key, name="audit on ticket {ticket.key}")
def note_ticket(ticketing: TicketingCredentials, ticket: Ticket, text: str, marker: str) -> bool:
    """Add the audit ``text`` to the ticket once."""
    client = ticketing.get_client()
    if any(marker in note for note in client.notes(ticket)):
        return False
    client.add_note(ticket, f"{marker} {text}")
    return True


def _start_key(context: TaskRunContext, params: dict[str, Any]) -> str:
    request: ContainmentRequest = params["request"]
    return cache_key("containment-start", request.key)


@external_call(_start_key, name="start containment {request.alert.source}-{request.alert.alert_id}")
def start_containment(request: ContainmentRequest) -> str:
    """Create (or find, by idempotency key) the `contain_alert` run of ``request``; it names
    the run that asked (this one), which it tells the outcome."""
    run = cast(
        FlowRun,
        run_deployment(
            CONTAIN_DEPLOYMENT,
            parameters={
                "request": request.model_dump(mode="json"),
                "response_run": flow_run.get_id(),
            },
            flow_run_name=f"contain-{request.alert.source}-{request.alert.alert_id}",
            tags=["riposte", "containment", f"source:{request.alert.source}"],
            idempotency_key=f"contain:{request.key}",
            timeout=0,
            as_subflow=False,
        ),
    )
    return str(run.id)


def run_page(run_id: str | UUID) -> str | None:
    """The page of flow run ``run_id`` in the Prefect UI (`PREFECT_UI_URL`, by default
    `PREFECT_API_URL` without its `/api`); None for anything but a flow run's id."""
    try:
        flow_run_id = UUID(str(run_id))
    except ValueError:
        return None
    return url_for("flow-run", obj_id=flow_run_id)
