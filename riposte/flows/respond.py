"""The `respond_to_alert` playbook: ticket, notify, update the alert, report what was done."""

from __future__ import annotations

import re

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from riposte.alerts.model import Alert
from riposte.alerts.response import Delivery, Route, Ticket
from riposte.blocks import (
    ChatWebhook,
    DefenderCredentials,
    TicketingCredentials,
    load_block,
)
from riposte.tasks.alerts import AlertUpdate, classify, fetch_alert, update_alert
from riposte.tasks.notify import notify
from riposte.tasks.runs import response_tags, tag_current_run
from riposte.tasks.tickets import create_ticket

DEFAULT_DEFENDER = "riposte-defender"
DEFAULT_TICKETING = "servicenow-credentials/riposte-servicenow"
DEFAULT_CHANNELS = ("slack-incoming-webhook/riposte-slack", "teams-workflow-webhook/riposte-teams")


class NotificationsFailed(RuntimeError):
    """Some chat messages were not sent; the rest of the response was done."""


class ResponseSummary(BaseModel):
    alert_id: str
    source: str
    severity: str
    route: Route
    ticket: Ticket | None
    deliveries: list[Delivery]
    alert_update: AlertUpdate


@flow(
    name="respond_to_alert",
    flow_run_name="{source}-{alert_id}",
    persist_result=True,
    log_prints=False,
)
def respond_to_alert(
    alert_id: str,
    source: str = "graph",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str = DEFAULT_TICKETING,
    channel_blocks: list[str] = list(DEFAULT_CHANNELS),  # noqa: B006 - Prefect copies parameters
) -> ResponseSummary:
    """Answer one Defender alert: find-or-create its ticket, notify, mark it in progress.

    Parameters name blocks (never secrets): `ticketing_block` and `channel_blocks` are
    `block-type-slug/block-name` so that ServiceNow or Jira, Slack or Teams can be chosen per run.
    """
    logger = get_run_logger()
    defender = load_block(DefenderCredentials, defender_block)
    alert: Alert = fetch_alert(defender, source, alert_id)
    tag_current_run(response_tags(alert))
    route: Route = classify(alert)
    logger.info("Alert %s (%s): %s", alert.id, alert.severity, route.reason)

    ticket: Ticket | None = None
    if route.open_ticket:
        ticket = create_ticket(load_block(TicketingCredentials, ticketing_block), alert, route)

    deliveries: list[Delivery] = []
    failures: list[str] = []
    if route.notify:
        futures = [
            (slug, notify.submit(load_block(ChatWebhook, slug), alert, ticket))
            for slug in channel_blocks
        ]
        for slug, future in futures:
            # Resolve every future: an unresolved failure would let the run end Completed.
            future.wait()
            if future.state.is_completed():
                deliveries.append(future.result())
            else:
                reason = _reason(future.state)
                deliveries.append(Delivery(channel=slug, delivered=False, detail=reason))
                failures.append(f"{slug}: {reason}")

    # The alert is updated even if a chat failed: the ticket exists and analysts should see it.
    update: AlertUpdate = update_alert(defender, alert, ticket)
    summary = ResponseSummary(
        alert_id=alert.id,
        source=alert.source,
        severity=str(alert.severity),
        route=route,
        ticket=ticket,
        deliveries=deliveries,
        alert_update=update,
    )
    create_markdown_artifact(
        markdown=_report(alert, summary),
        key=_artifact_key(alert),
        description=f"Response to {alert.source} alert {alert.id}",
    )
    if failures:
        raise NotificationsFailed("messages not sent: " + "; ".join(failures))
    return summary


def _reason(state: object) -> str:
    message = getattr(state, "message", None) or "failed"
    return str(message)[:300]


def _artifact_key(alert: Alert) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", f"response-{alert.source}-{alert.id}".lower()).strip("-")
    return slug[:120]


def _report(alert: Alert, summary: ResponseSummary) -> str:
    lines = [
        f"# Response to {alert.source} alert `{alert.id}`",
        "",
        f"**{alert.title}** ({alert.severity}); route: {summary.route.reason}, "
        f"priority {summary.route.priority}.",
        "",
        "| step | result |",
        "|---|---|",
    ]
    ticket = summary.ticket
    if ticket:
        verb = "created" if ticket.created else "found existing"
        lines.append(f"| ticket | {verb} {ticket.system} [{ticket.key}]({ticket.url}) |")
    else:
        lines.append("| ticket | none (route opens no ticket) |")
    for d in summary.deliveries:
        result = "sent" if d.delivered else f"NOT sent: {d.detail}"
        lines.append(f"| message {d.channel} | {result} |")
    if not summary.route.notify:
        lines.append("| messages | none (route sends no message) |")
    upd = summary.alert_update
    status = "set to inProgress" if upd.status_changed else f"left as {upd.status}"
    lines.append(f"| alert status | {status} |")
    lines.append(
        f"| alert comment | {'added' if upd.comment_added else 'already present / none'} |"
    )
    if alert.portal_url:
        lines += ["", f"[Open the alert in Defender]({alert.portal_url})"]
    return "\n".join(lines)
