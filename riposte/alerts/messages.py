"""Ticket, comment and chat text, rendered from Jinja2 templates in a sandboxed environment.

The sandbox refuses attribute access to Python internals, and undefined variables are errors,
so a template mistake fails the render instead of shipping an empty field.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import PackageLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from riposte.alerts.model import Alert, Severity
from riposte.alerts.response import Route, Ticket, TicketDraft


class TemplateRenderError(ValueError):
    """A template could not be rendered; the message names the template."""


@cache
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=PackageLoader("riposte.alerts", "templates"),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=False,
    )


def render(template: str, **context: Any) -> str:
    try:
        return _environment().get_template(template).render(**context).strip()
    except TemplateError as exc:
        raise TemplateRenderError(f"template {template}: {exc}") from None


def ticket_draft(alert: Alert, route: Route) -> TicketDraft:
    summary = f"[Defender] {alert.title}"
    return TicketDraft(
        correlation_key=alert.correlation_key,
        summary=summary if len(summary) <= 255 else summary[:252] + "...",
        description=render("ticket_description.j2", alert=alert, route=route),
        priority=route.priority,
        source_label=f"Microsoft Defender ({alert.source})",
    )


def alert_comment(ticket: Ticket) -> str:
    return render("alert_comment.j2", ticket=ticket)


_SLACK_EMOJI = {Severity.HIGH: ":red_circle:", Severity.MEDIUM: ":large_orange_circle:"}
_TEAMS_COLOR = {Severity.HIGH: "attention", Severity.MEDIUM: "warning"}


def _facts(alert: Alert, ticket: Ticket | None) -> list[tuple[str, str]]:
    facts = [("Severity", str(alert.severity)), ("Source", alert.source), ("Alert id", alert.id)]
    if alert.alert_type:
        facts.append(("Type", alert.alert_type))
    if ticket:
        facts.append(("Ticket", ticket.key))
    return facts


def slack_message(alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
    """Slack Block Kit message with a text fallback for notifications."""
    text = render("chat_text.j2", alert=alert, ticket=ticket)
    emoji = _SLACK_EMOJI.get(alert.severity, ":white_circle:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{emoji} *{_slack_escape(alert.title)}*"},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"}
                for k, v in _facts(alert, ticket)
            ],
        },
    ]
    links = []
    if ticket:
        links.append(f"<{ticket.url}|Open ticket {_slack_escape(ticket.key)}>")
    if alert.portal_url:
        links.append(f"<{alert.portal_url}|Open in Defender>")
    if links:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(links)}]}
        )
    return {"text": text, "blocks": blocks}


def _slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_message(alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
    """A Teams Workflows message carrying one Adaptive Card (schema 1.4)."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": alert.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": _TEAMS_COLOR.get(alert.severity, "default"),
        },
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(alert, ticket)]},
    ]
    actions = []
    if ticket:
        actions.append({"type": "Action.OpenUrl", "title": f"Open {ticket.key}", "url": ticket.url})
    if alert.portal_url:
        actions.append(
            {"type": "Action.OpenUrl", "title": "Open in Defender", "url": alert.portal_url}
        )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


CHAT_RENDERERS = {"slack": slack_message, "teams": teams_message}
