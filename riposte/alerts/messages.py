"""Ticket, comment, chat, email and digest text, each rendered from its template
(`riposte.alerts.templating`: the sandbox every template runs in).

What each kind of template is given (``alert`` is an `Alert`, ``ticket`` a `Ticket` or none):
- ``servicenow_description``, ``jira_description``: alert, route (text; Jira gets it as ADF);
- ``servicenow_work_note``, ``jira_comment``: alert, ticket_key, alert_number, reason;
- ``slack``, ``teams`` (must render a JSON object): alert, ticket, facts [(label, value)],
  text (the notification fallback), emoji, color; the ``slack_escape`` filter is available;
- ``email_subject``, ``email_text``, ``email_html``: alert, ticket, facts;
- ``digest``: bucket (channel, start, end), alerts, by_severity, max_items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from riposte.alerts.adf import to_adf
from riposte.alerts.model import Alert, Severity
from riposte.alerts.policy import Templates
from riposte.alerts.response import Route, Ticket, TicketDraft
from riposte.alerts.sync import ALERT_MARKER
from riposte.alerts.templating import (
    TemplateRenderError,
    check_template,
    render,
    slack_escape,
    teams_text,
)
from riposte.alerts.throttle import DigestBucket

# The template each kind uses when the policy names none.
DEFAULT_TEMPLATES = Templates(
    servicenow_description="ticket_description.j2",
    servicenow_work_note="ticket_note.j2",
    jira_description="ticket_description.j2",
    jira_comment="ticket_note.j2",
    slack="slack_message.json.j2",
    teams="teams_message.json.j2",
    email_subject="email_subject.j2",
    email_text="email_text.j2",
    email_html="email.html.j2",
    digest="digest.j2",
)


class EmailContent(BaseModel):
    """An email: a one-line subject, a plain-text part and an HTML part."""

    model_config = ConfigDict(frozen=True)

    subject: str
    text: str
    html: str


_SLACK_EMOJI = {Severity.HIGH: ":red_circle:", Severity.MEDIUM: ":large_orange_circle:"}
_TEAMS_COLOR = {Severity.HIGH: "attention", Severity.MEDIUM: "warning"}
# Slack refuses a section text over 3000 characters.
SLACK_SECTION_LIMIT = 3000


def _facts(alert: Alert, ticket: Ticket | None) -> list[tuple[str, str]]:
    facts = [("Severity", str(alert.severity)), ("Source", alert.source), ("Alert id", alert.id)]
    if alert.alert_type:
        facts.append(("Type", alert.alert_type))
    if ticket:
        facts.append(("Ticket", ticket.key))
    return facts


def _one_line(text: str, limit: int) -> str:
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


# The longest ticket description Riposte writes before its marker line.
DESCRIPTION_MAX = 3500


class MessageRenderer:
    """Renders every message of a playbook with the templates its policy rule names.

    Example:
        ```python
        renderer = MessageRenderer(action.templates, settings.templates_dir)
        draft = renderer.ticket_draft(alert, action.route(), system="jira")
        ```
    """

    def __init__(
        self, templates: Templates | None = None, templates_dir: Path | str | None = None
    ) -> None:
        self.templates = (templates or Templates()).merged_over(DEFAULT_TEMPLATES)
        self.templates_dir = templates_dir

    def template_for(self, kind: str) -> str:
        name: str | None = getattr(self.templates, kind)
        if name is None:  # every kind has a default; a new kind without one is our bug
            raise KeyError(f"no template for {kind!r}")
        return name

    def render(self, kind: str, **context: Any) -> str:
        return render(self.template_for(kind), self.templates_dir, **context)

    def _json(self, kind: str, **context: Any) -> dict[str, Any]:
        name = self.template_for(kind)
        text = render(name, self.templates_dir, **context)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateRenderError(
                f"template {name} did not render JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        if not isinstance(value, dict):
            raise TemplateRenderError(f"template {name} must render a JSON object")
        return value

    def problems(self) -> list[tuple[str, str]]:
        """(kind, problem) for every template that is missing, broken or unsafe."""
        found = []
        for kind, name in self.templates.named().items():
            problem = check_template(name, self.templates_dir)
            if problem:
                found.append((kind, problem))
        return found

    # --- tickets -----------------------------------------------------------------------------

    def ticket_description(self, alert: Alert, route: Route, system: str = "servicenow") -> str:
        kind = "jira_description" if system == "jira" else "servicenow_description"
        return self.render(kind, alert=alert, route=route)

    def ticket_draft(
        self,
        alert: Alert,
        route: Route,
        *,
        system: str = "servicenow",
        correlation_key: str | None = None,
    ) -> TicketDraft:
        """The ticket to find or create; ``correlation_key`` overrides the alert's own (a
        throttled group or an incident shares one ticket)."""
        summary = f"[Defender] {alert.title}"
        # The opening alert's marker ends the description, as each alert note ends with its
        # own: the ticket sync reads which alerts a ticket carries from them.
        description = self.ticket_description(alert, route, system).rstrip()
        # Cut below ServiceNow's default field length (4,000), so the marker is never cut off.
        if len(description) > DESCRIPTION_MAX:
            description = description[: DESCRIPTION_MAX - 20].rstrip() + "\n[... cut]"
        return TicketDraft(
            correlation_key=correlation_key or alert.correlation_key,
            summary=summary if len(summary) <= 255 else summary[:252] + "...",
            description=f"{description}\n\n{ALERT_MARKER} {alert.correlation_key}",
            priority=route.priority,
            source_label=f"Microsoft Defender ({alert.source})",
        )

    def jira_description(self, alert: Alert, route: Route) -> dict[str, Any]:
        """The Jira description as Atlassian Document Format."""
        return to_adf(self.ticket_description(alert, route, "jira"))

    def ticket_note(
        self,
        alert: Alert,
        *,
        system: str = "servicenow",
        ticket_key: str,
        alert_number: int,
        reason: str,
    ) -> str:
        """A ServiceNow work note or Jira comment adding ``alert`` to an existing ticket."""
        kind = "jira_comment" if system == "jira" else "servicenow_work_note"
        return self.render(
            kind, alert=alert, ticket_key=ticket_key, alert_number=alert_number, reason=reason
        )

    # --- chat --------------------------------------------------------------------------------

    def _chat_context(self, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        return {
            "alert": alert,
            "ticket": ticket,
            "facts": _facts(alert, ticket),
            "text": render("chat_text.j2", self.templates_dir, alert=alert, ticket=ticket),
            "emoji": _SLACK_EMOJI.get(alert.severity, ":white_circle:"),
            "color": _TEAMS_COLOR.get(alert.severity, "default"),
        }

    def slack(self, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        """Slack Block Kit message with a text fallback for notifications (Slack reads that
        text as mrkdwn too: escaped, so an alert's `<!channel>` or `<url|label>` stays text)."""
        context = self._chat_context(alert, ticket)
        context["text"] = slack_escape(context["text"])
        return self._json("slack", **context)

    def teams(self, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        """A Teams Workflows message carrying one Adaptive Card (schema 1.4)."""
        return self._json("teams", **self._chat_context(alert, ticket))

    def chat(self, kind: str, alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
        if kind == "slack":
            return self.slack(alert, ticket)
        if kind == "teams":
            return self.teams(alert, ticket)
        raise ValueError(f"no chat message for {kind!r} (known: slack, teams)")

    # --- email -------------------------------------------------------------------------------

    def email(self, alert: Alert, ticket: Ticket | None) -> EmailContent:
        context = {"alert": alert, "ticket": ticket, "facts": _facts(alert, ticket)}
        return EmailContent(
            # Mail headers are one line: a title with newlines must not add headers.
            subject=_one_line(self.render("email_subject", **context), 250),
            text=self.render("email_text", **context),
            html=self.render("email_html", **context),
        )

    # --- digest ------------------------------------------------------------------------------

    def digest_text(
        self, bucket: DigestBucket, alerts: Sequence[Alert], max_items: int = 50
    ) -> str:
        """The digest as text: counts by severity, then up to ``max_items`` alerts."""
        by_severity: dict[str, int] = {}
        for alert in alerts:
            by_severity[str(alert.severity)] = by_severity.get(str(alert.severity), 0) + 1
        return self.render(
            "digest",
            bucket=bucket,
            alerts=list(alerts),
            by_severity=by_severity,
            max_items=max_items,
        )

    def digest(
        self, kind: str, bucket: DigestBucket, alerts: Sequence[Alert]
    ) -> dict[str, Any] | EmailContent:
        """One summary message for a digest period: Slack, Teams, or email."""
        # Slack refuses long sections: list fewer alerts there rather than cut a line in half.
        text = self.digest_text(bucket, alerts, max_items=20 if kind == "slack" else 50)
        title = text.splitlines()[0] if text else "Riposte digest"
        if kind == "slack":
            body = slack_escape(text)
            if len(body) > SLACK_SECTION_LIMIT:
                body = body[: SLACK_SECTION_LIMIT - 20] + "\n... (truncated)"
            section = {
                "type": "section",
                "text": {"type": "mrkdwn", "text": body, "verbatim": True},
            }
            return {"text": slack_escape(title), "blocks": [section]}
        if kind == "teams":
            card = {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [teams_text(line) for line in text.splitlines() or [""]],
            }
            attachment = {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
            return {"type": "message", "attachments": [attachment]}
        if kind == "email":
            escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            return EmailContent(
                subject=_one_line(title, 250), text=text, html=f"<pre>{escaped}</pre>"
            )
        raise ValueError(f"no digest message for {kind!r} (known: slack, teams, email)")


# --- the module-level functions the tasks already call (built-in templates) ------------------

_DEFAULT = MessageRenderer()


def ticket_draft(alert: Alert, route: Route) -> TicketDraft:
    return _DEFAULT.ticket_draft(alert, route)


def alert_comment(ticket: Ticket) -> str:
    return render("alert_comment.j2", ticket=ticket)


def slack_message(alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
    """Slack Block Kit message with a text fallback for notifications."""
    return _DEFAULT.slack(alert, ticket)


def teams_message(alert: Alert, ticket: Ticket | None) -> dict[str, Any]:
    """A Teams Workflows message carrying one Adaptive Card (schema 1.4)."""
    return _DEFAULT.teams(alert, ticket)


def email_message(alert: Alert, ticket: Ticket | None) -> EmailContent:
    return _DEFAULT.email(alert, ticket)


CHAT_RENDERERS = {"slack": slack_message, "teams": teams_message}
