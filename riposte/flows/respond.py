"""Playbooks that answer alerts: `respond_to_alert` (one alert) and `respond_batch` (many).

Both run the same per-alert response, the `respond` task: fetch, classify, ticket (find-or-create),
notify, update the alert. Calm traffic gets one `respond_to_alert` run per alert; a burst gets
batches, where each alert is a task run named after it, because a flow run per alert costs the
Prefect server about six times more than a task run (see the README's figures).
"""

from __future__ import annotations

import contextvars
import re
from concurrent.futures import ThreadPoolExecutor

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel

from riposte.alerts.model import Alert
from riposte.alerts.response import AlertRef, Delivery, Route, Ticket, ref_for
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
BATCH_CONCURRENCY = 16


class NotificationsFailed(RuntimeError):
    """Some chat messages were not sent; the rest of the response was done."""


class Plan(BaseModel):
    """Where a response goes: block names only, never secrets."""

    defender_block: str = DEFAULT_DEFENDER
    ticketing_block: str = DEFAULT_TICKETING
    channel_blocks: list[str] = list(DEFAULT_CHANNELS)


class ResponseSummary(BaseModel):
    alert_id: str
    source: str
    severity: str
    title: str
    portal_url: str | None
    route: Route
    ticket: Ticket | None
    deliveries: list[Delivery]
    alert_update: AlertUpdate


def answer(ref: AlertRef, plan: Plan) -> ResponseSummary:
    """The response to one alert revision, as task runs named after the alert.

    Every step that writes is find-or-create in the external system and keyed by the alert
    (not by the run), under a lock: a Retry, a re-run or a duplicate delivery running at the
    same moment finds the step done and gets it back Cached instead of doing it twice.
    """
    logger = get_run_logger()
    defender = load_block(DefenderCredentials, plan.defender_block)
    alert: Alert = fetch_alert(defender, ref.source, ref.alert_id)
    route: Route = classify(alert)
    logger.info("Alert %s (%s): %s", alert.id, alert.severity, route.reason)

    ticket: Ticket | None = None
    if route.open_ticket:
        ticket = create_ticket(load_block(TicketingCredentials, plan.ticketing_block), alert, route)

    deliveries: list[Delivery] = []
    failures: list[str] = []
    if route.notify:
        for slug in plan.channel_blocks:
            state = notify(load_block(ChatWebhook, slug), alert, ticket, return_state=True)
            if state.is_completed():
                deliveries.append(state.result())
            else:
                reason = _reason(state)
                deliveries.append(Delivery(channel=slug, delivered=False, detail=reason))
                failures.append(f"{slug}: {reason}")

    # The alert is updated even if a chat failed: the ticket exists and analysts should see it.
    update: AlertUpdate = update_alert(defender, alert, ticket)
    if failures:
        raise NotificationsFailed("messages not sent: " + "; ".join(failures))
    return ResponseSummary(
        alert_id=alert.id,
        source=alert.source,
        severity=str(alert.severity),
        title=alert.title,
        portal_url=alert.portal_url,
        route=route,
        ticket=ticket,
        deliveries=deliveries,
        alert_update=update,
    )


@flow(
    name="respond_to_alert",
    flow_run_name="{source}-{alert_id}",
    persist_result=True,
    log_prints=False,
)
def respond_to_alert(
    alert_id: str,
    source: str = "graph",
    revision: str = "",
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str = DEFAULT_TICKETING,
    channel_blocks: list[str] = list(DEFAULT_CHANNELS),  # noqa: B006 - Prefect copies parameters
) -> ResponseSummary:
    """Answer one Defender alert: find-or-create its ticket, notify, mark it in progress.

    Parameters name blocks (never secrets): `ticketing_block` and `channel_blocks` are
    `block-type-slug/block-name` so that ServiceNow or Jira, Slack or Teams can be chosen per run.
    Without `revision`, the alert is read first to learn it. Running this again for an alert that
    was answered does nothing new; for one whose response failed, it finishes what is missing.
    """
    plan = Plan(
        defender_block=defender_block,
        ticketing_block=ticketing_block,
        channel_blocks=channel_blocks,
    )
    ref = AlertRef(source=source, alert_id=alert_id, revision=revision)
    if not ref.revision:
        alert = fetch_alert(load_block(DefenderCredentials, defender_block), source, alert_id)
        ref = ref_for(alert)
        tag_current_run(response_tags(alert))
    summary = answer(ref, plan)
    tag_current_run(["riposte", f"source:{summary.source}", f"severity:{summary.severity}"])
    create_markdown_artifact(
        markdown=_report(summary),
        key=_artifact_key(summary),
        description=f"Response to {summary.source} alert {summary.alert_id}",
    )
    return summary


class BatchSummary(BaseModel):
    answered: int
    failed: list[str]


@flow(
    name="respond_batch",
    flow_run_name="batch-{first_alert}-{size}",
    persist_result=True,
    log_prints=False,
)
def respond_batch(
    alerts: list[AlertRef],
    first_alert: str = "",
    size: int = 0,
    defender_block: str = DEFAULT_DEFENDER,
    ticketing_block: str = DEFAULT_TICKETING,
    channel_blocks: list[str] = list(DEFAULT_CHANNELS),  # noqa: B006 - Prefect copies parameters
) -> BatchSummary:
    """Answer a burst of alerts in one run, several at a time. Each alert's steps are task runs
    named after it (`ticket graph-<id>`...), so it is found in the UI by the alert's id. A Retry
    answers only what failed; the rest comes back Cached."""
    plan = Plan(
        defender_block=defender_block,
        ticketing_block=ticketing_block,
        channel_blocks=channel_blocks,
    )
    logger = get_run_logger()
    with ThreadPoolExecutor(BATCH_CONCURRENCY, thread_name_prefix="alert") as pool:
        # Each thread needs the flow run's context for its task runs to belong to this run.
        futures = [
            (ref, pool.submit(contextvars.copy_context().run, answer, ref, plan)) for ref in alerts
        ]
        rows: list[dict[str, str]] = []
        failed: list[str] = []
        for ref, future in futures:
            try:
                rows.append(_row(future.result()))
            except Exception as exc:
                logger.error("Response to %s-%s failed: %s", ref.source, ref.alert_id, exc)
                failed.append(ref.alert_id)
                rows.append(
                    {"alert": f"{ref.source}-{ref.alert_id}", "result": f"FAILED: {exc}"[:300]}
                )
    create_table_artifact(
        table=rows, key="response-batch", description=f"Responses to {len(alerts)} alerts"
    )
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(alerts)} responses failed: {', '.join(failed[:20])}"
        )
    return BatchSummary(answered=len(alerts), failed=failed)


def _row(summary: ResponseSummary) -> dict[str, str]:
    ticket = summary.ticket
    return {
        "alert": f"{summary.source}-{summary.alert_id}",
        "severity": summary.severity,
        "ticket": f"{ticket.system} {ticket.key}" if ticket else "none",
        "messages": ", ".join(d.channel for d in summary.deliveries if d.delivered) or "none",
        "alert status": summary.alert_update.status,
        "result": "answered",
    }


def _reason(state: object) -> str:
    message = getattr(state, "message", None) or "failed"
    return str(message)[:300]


def _artifact_key(summary: ResponseSummary) -> str:
    name = f"response-{summary.source}-{summary.alert_id}".lower()
    slug = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")
    return slug[:120]


def _report(summary: ResponseSummary) -> str:
    lines = [
        f"# Response to {summary.source} alert `{summary.alert_id}`",
        "",
        f"**{summary.title}** ({summary.severity}); route: {summary.route.reason}, "
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
    status = f"set to {upd.status}" if upd.status_changed else f"left as {upd.status}"
    lines.append(f"| alert status | {status} |")
    lines.append(
        f"| alert comment | {'added' if upd.comment_added else 'already present / none'} |"
    )
    if summary.portal_url:
        lines += ["", f"[Open the alert in Defender]({summary.portal_url})"]
    return "\n".join(lines)
