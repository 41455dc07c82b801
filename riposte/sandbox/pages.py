"""The pages a person opens from a ticket link: ServiceNow's `nav_to.do?uri=incident.do?sys_id=...`
and Jira's `/browse/KEY`, so that the links in messages, run reports and the Prefect UI work on
the local stack.

A real instance shows these pages to a signed-in user; the sandbox listens on loopback only and
shows them to whoever asks. Every value comes from a ticket whose text came from an alert: it is
escaped as HTML text, the page runs no script and loads nothing (a Content-Security-Policy that
allows only its inline style).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from riposte.sandbox.state import get_state

router = APIRouter(include_in_schema=False)

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}th{text-align:left;padding-right:1em;"
    "vertical-align:top}pre{white-space:pre-wrap}"
)


def _text(value: Any) -> str:
    if isinstance(value, dict):  # a reference field ({"name": ...}, {"value": ...})
        value = value.get("name") or value.get("displayName") or value.get("value") or ""
    return escape(str(value if value is not None else ""))


def _page(title: str, rows: list[tuple[str, Any]], notes: list[tuple[str, Any]]) -> HTMLResponse:
    body = [f"<h1>{escape(title)}</h1>", "<table>"]
    body += [f"<tr><th>{escape(k)}</th><td>{_text(v)}</td></tr>" for k, v in rows]
    body.append("</table>")
    if notes:
        body.append(f"<h2>Notes ({len(notes)})</h2>")
        body += [f"<h3>{_text(when)}</h3><pre>{_text(text)}</pre>" for when, text in notes]
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(body)}"
        "<p><small>Riposte sandbox: a simulated ticket.</small></p></body></html>"
    )
    return HTMLResponse(html, headers=_HEADERS)


def _missing(what: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><title>Not found</title><p>{escape(what)} does not exist in this "
        "sandbox (it was reset, or the link is from another one).</p>",
        status_code=404,
        headers=_HEADERS,
    )


@router.get("/servicenow/nav_to.do")
async def servicenow_page(request: Request) -> HTMLResponse:
    """``nav_to.do?uri=incident.do?sys_id=<id>``, as ServiceNow links a record."""
    uri = request.query_params.get("uri", "")
    target = urlsplit(uri)
    sys_id = (parse_qs(target.query).get("sys_id") or [""])[0]
    state = get_state(request).servicenow
    record = state.records.get(sys_id) if target.path == "incident.do" else None
    if record is None:
        return _missing("This incident")
    rows = [
        (name, record.get(name))
        for name in ("number", "short_description", "state", "priority", "urgency", "impact",
                     "assignment_group", "correlation_id", "sys_created_on", "sys_updated_on")
    ]  # fmt: skip
    rows.append(("description", record.get("description")))
    notes = [
        (f"{entry.get('element', '')} {entry.get('sys_created_on', '')}", entry.get("value"))
        for entry in state.journals.get(sys_id, [])
    ]
    return _page(f"{record.get('number', sys_id)}: {record.get('short_description', '')}", rows,
                 notes)  # fmt: skip


@router.get("/jira/browse/{key}")
async def jira_page(key: str, request: Request) -> HTMLResponse:
    """``/browse/KEY``, as Jira links an issue."""
    jira = get_state(request).jira
    issue = next((i for i in jira.issues.values() if i.key.upper() == key.upper()), None)
    if issue is None:
        return _missing(f"Issue {key}")
    fields = issue.fields
    rows = [
        (name, fields.get(name))
        for name in ("summary", "status", "priority", "issuetype", "labels", "created", "updated",
                     "resolution")
    ]  # fmt: skip
    description = fields.get("description")
    rows.append(("description", _adf_text(description)))
    notes = [
        (comment.get("created", ""), _adf_text(comment.get("body"))) for comment in issue.comments
    ]
    return _page(f"{issue.key}: {fields.get('summary', '')}", rows, notes)


def _adf_text(node: Any) -> str:
    """The text of an Atlassian document (or a plain string), without its markup."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        text = node.get("text")
        own = text if isinstance(text, str) else ""
        inner = "".join(_adf_text(child) for child in node.get("content") or [])
        block = node.get("type") in ("paragraph", "heading", "codeBlock", "listItem")
        return own + inner + ("\n" if block else "")
    if isinstance(node, list):
        return "".join(_adf_text(child) for child in node)
    return ""
