"""Message templates: every output shape, custom folders, and hostile templates refused."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from riposte.alerts.messages import (
    CHAT_RENDERERS,
    MessageRenderer,
    alert_comment,
    email_message,
    slack_message,
    teams_message,
    ticket_draft,
)
from riposte.alerts.model import Severity
from riposte.alerts.policy import Templates
from riposte.alerts.response import Priority, Route, Ticket
from riposte.alerts.templating import (
    TemplateRenderError,
    UnsafeTemplateError,
    check_template,
    render,
)
from riposte.alerts.throttle import DigestBucket
from tests.alert_factory import T0, api_alert, entity, make_alert

TICKET = Ticket(
    system="servicenow",
    key="INC0010001",
    id="abc",
    url="https://example.service-now.com/nav_to.do?uri=incident.do?sys_id=abc",
    created=True,
)
ROUTE = Route(priority=Priority.HIGH, open_ticket=True, notify=True, reason="policy rule 'x'")
HOSTILE_TITLE = 'Evil <!channel> & "quotes" \n newline <script>alert(1)</script>'


def alert_with(**fields: Any) -> Any:
    return make_alert(
        portal_url="https://security.microsoft.com/alerts/a-1",
        entities=(entity("ip", "203.0.113.45"), entity("account", "bob@contoso.com")),
        alert_type="API_AccessFromSuspiciousIP",
        **fields,
    )


# --- the built-in templates ------------------------------------------------------------------


def test_slack_message_is_block_kit_with_escaped_text_and_links() -> None:
    message = slack_message(alert_with(title=HOSTILE_TITLE, severity=Severity.HIGH), TICKET)
    header, facts, context = message["blocks"]
    assert header["text"]["text"].startswith(":red_circle: *Evil &lt;!channel&gt; &amp;")
    assert "<!channel>" not in json.dumps(message["blocks"])
    assert {"type": "mrkdwn", "text": "*Ticket*\nINC0010001", "verbatim": True} in facts["fields"]
    assert context["elements"][0]["text"] == (
        f"<{TICKET.url}|Open ticket INC0010001> | "
        "<https://security.microsoft.com/alerts/a-1|Open in Defender>"
    )
    assert message["text"].startswith("[HIGH] Evil")


def test_slack_message_without_ticket_or_portal_link_has_no_context_block() -> None:
    message = slack_message(make_alert(), None)
    assert [b["type"] for b in message["blocks"]] == ["section", "section"]


def test_teams_message_is_an_adaptive_card_with_actions() -> None:
    message = teams_message(alert_with(title=HOSTILE_TITLE), TICKET)
    card = message["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    title = card["body"][0]
    # A text run (never markdown), carrying the title as it is.
    assert title["type"] == "RichTextBlock"
    assert title["inlines"][0] == {
        "type": "TextRun", "text": HOSTILE_TITLE, "weight": "Bolder", "size": "Medium",
        "color": "warning",
    }  # fmt: skip
    assert {b["type"] for b in card["body"]} == {"RichTextBlock"}
    assert [a["title"] for a in card["actions"]] == ["Open INC0010001", "Open in Defender"]
    assert CHAT_RENDERERS["teams"] is teams_message


def test_servicenow_description_and_work_note() -> None:
    alert = alert_with(incident_id="31547")
    draft = ticket_draft(alert, ROUTE)
    assert draft.correlation_key == alert.correlation_key
    assert "- Incident: 31547" in draft.description
    assert "Routed by Riposte: policy rule 'x'." in draft.description
    note = MessageRenderer().ticket_note(
        alert, ticket_key="INC0010001", alert_number=7, reason="throttled"
    )
    assert "alert 7 on this ticket (throttled)" in note
    assert "- ip: 203.0.113.45" in note


def test_jira_description_is_atlassian_document_format_with_links() -> None:
    adf = MessageRenderer().jira_description(alert_with(), ROUTE)
    assert adf["type"] == "doc" and adf["version"] == 1
    kinds = [block["type"] for block in adf["content"]]
    assert "bulletList" in kinds
    links = [
        mark["attrs"]["href"]
        for block in adf["content"]
        for item in block.get("content", [])
        for node in _texts(item)
        for mark in node.get("marks", [])
    ]
    assert "https://security.microsoft.com/alerts/a-1" in links


def _texts(node: dict[str, Any]) -> list[dict[str, Any]]:
    if node.get("type") == "text":
        return [node]
    return [t for child in node.get("content", []) for t in _texts(child)]


def test_ticket_draft_takes_a_group_correlation_key() -> None:
    draft = MessageRenderer().ticket_draft(
        alert_with(), ROUTE, system="jira", correlation_key="riposte-incident-graph-1"
    )
    assert draft.correlation_key == "riposte-incident-graph-1"


def test_email_html_is_autoescaped_and_the_text_part_is_not() -> None:
    email = email_message(alert_with(title=HOSTILE_TITLE), TICKET)
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert f'<a href="{TICKET.url}">INC0010001</a>' in email.html
    assert "<script>alert(1)</script>" in email.text
    assert "\n" not in email.subject
    assert email.subject.startswith("[Defender] [MEDIUM] Evil <!channel>")
    assert email.subject.endswith("(INC0010001)")


def test_alert_comment_links_the_ticket() -> None:
    assert alert_comment(TICKET) == f"Riposte opened servicenow ticket INC0010001: {TICKET.url}"


@pytest.mark.parametrize("kind", ["slack", "teams", "email"])
def test_digest_is_one_message_summarising_the_period(kind: str) -> None:
    bucket = DigestBucket(channel="c", start=T0, end=T0 + timedelta(hours=1))
    alerts = [api_alert(f"d{i}", "API_SpikeInLatency") for i in range(60)]
    message = MessageRenderer().digest(kind, bucket, alerts)
    text = json.dumps(message) if isinstance(message, dict) else message.text
    assert "Riposte digest: 60 alert(s)" in text
    more = 40 if kind == "slack" else 10
    assert f"and {more} more" in text


# --- custom templates ------------------------------------------------------------------------


def test_a_custom_folder_overrides_built_ins_and_policies_name_templates(tmp_path: Path) -> None:
    (tmp_path / "chat_text.j2").write_text("custom fallback for {{ alert.id }}")
    (tmp_path / "short.json.j2").write_text('{"text": {{ ("New: " ~ alert.title) | tojson }}}')
    renderer = MessageRenderer(Templates(slack="short.json.j2"), tmp_path)
    assert renderer.slack(make_alert(title="x"), None) == {"text": "New: x"}
    assert renderer.teams(make_alert(), None)["type"] == "message"  # still the built-in
    assert render("chat_text.j2", tmp_path, alert=make_alert(), ticket=None) == (
        "custom fallback for a-1"
    )
    assert renderer.problems() == []


def test_a_chat_template_that_does_not_render_json_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "bad.json.j2").write_text("{ not json {{ alert.id }}")
    with pytest.raises(TemplateRenderError, match="bad.json.j2 did not render JSON"):
        MessageRenderer(Templates(slack="bad.json.j2"), tmp_path).slack(make_alert(), None)


def test_an_undefined_variable_fails_the_render_naming_the_template(tmp_path: Path) -> None:
    (tmp_path / "typo.j2").write_text("{{ alert.titel }}")
    with pytest.raises(TemplateRenderError, match=r"template typo.j2: .*titel"):
        render("typo.j2", tmp_path, alert=make_alert())


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing.j2", "template 'missing.j2' not found in"),
        ("syntax.j2", "line 2: Expected an expression"),
        ("unsafe.j2", "reaches for '__globals__', a Python internal"),
    ],
)
def test_check_template_says_what_is_wrong(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / "syntax.j2").write_text("ok {{ alert.title }}\n{% if %}")
    (tmp_path / "unsafe.j2").write_text("{{ cycler.__init__.__globals__ }}")
    found = check_template(name, tmp_path)
    assert found is not None and problem in found


# --- hostile templates -----------------------------------------------------------------------

HOSTILE = {
    "class_mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "self_context": "{{ self._TemplateReference__context }}",
    "item_access": "{{ alert['__class__'] }}",
    "attr_filter": "{{ alert | attr('__class__') }}",
    "func_globals": "{{ probe.fire.__func__.__globals__ }}",
    "frame": "{% for x in range(1) %}{{ loop.gi_frame }}{% endfor %}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_template_reaching_for_python_internals_is_refused_before_it_runs(
    tmp_path: Path, source: str
) -> None:
    fired: list[str] = []

    class Probe:
        def fire(self) -> str:
            fired.append("ran")
            return ""

    (tmp_path / "evil.j2").write_text("{{ probe.fire() }}" + source)
    with pytest.raises(UnsafeTemplateError, match="a Python internal: refused without running"):
        render("evil.j2", tmp_path, alert=make_alert(), probe=Probe())
    assert fired == []


@pytest.mark.parametrize(
    "source",
    [
        "{% set name = '__cla' ~ 'ss__' %}{{ alert | attr(name) }}",
        "{{ '{0.__class__}'.format(alert) }}",
        "{{ alert.entities.__len__ }}",
        "{% set l = [] %}{{ l.append(1) }}",
        "{{ 'x' * 1000000000 }}",
        "{{ 9 ** 999999 }}",
    ],
)
def test_dynamic_tricks_are_stopped_by_the_sandbox(tmp_path: Path, source: str) -> None:
    (tmp_path / "sneaky.j2").write_text(source)
    with pytest.raises(UnsafeTemplateError):
        render("sneaky.j2", tmp_path, alert=make_alert())


def test_a_custom_template_cannot_escape_its_folder(tmp_path: Path) -> None:
    inner = tmp_path / "templates"
    inner.mkdir()
    (tmp_path / "secret.j2").write_text("secret")
    with pytest.raises(TemplateRenderError, match="not found"):
        render("../secret.j2", inner)
