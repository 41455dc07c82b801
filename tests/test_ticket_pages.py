"""The sandbox serves a page at each simulated ticket's URL (ServiceNow `nav_to.do`, Jira
`/browse/KEY`), as the clients build those URLs, so that ticket links work on the local stack;
alert text on them stays text."""

from __future__ import annotations

import httpx

from riposte.alerts.response import Priority, TicketDraft
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.app import create_app
from riposte.sandbox.config import SandboxConfig
from tests.servers import serve_in_thread

HOSTILE = '<script>alert(1)</script><a href="https://evil.example">click</a> & "quotes"'


def draft(key: str) -> TicketDraft:
    return TicketDraft(
        correlation_key=key,
        summary=f"[Defender] {HOSTILE}"[:200],
        description=f"Alert text: {HOSTILE}",
        priority=Priority.HIGH,
        source_label="Microsoft Defender (graph)",
    )


def test_ticket_links_open_a_page_that_shows_the_ticket_as_text() -> None:
    cfg = SandboxConfig()
    with serve_in_thread(create_app(cfg)) as url:
        blocks = sandbox_blocks(url, cfg)
        for name in ("riposte-servicenow", "riposte-jira"):
            client = blocks[name].get_client()  # type: ignore[attr-defined]
            ticket = client.create(draft(f"riposte-pages-{name}"))
            client.add_note(ticket, f"note: {HOSTILE}")
            page = httpx.get(ticket.url, timeout=10)
            assert page.status_code == 200, (name, ticket.url, page.text[:200])
            assert page.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in page.headers["content-security-policy"]
            html = page.text
            assert ticket.key in html
            assert "<script>" not in html and '<a href="https://evil.example"' not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
            assert "note: &lt;script&gt;" in html  # the note, as text
        gone = httpx.get(f"{url}/jira/browse/SEC-999", timeout=10)
        assert gone.status_code == 404 and "does not exist in this sandbox" in gone.text
        wrong = httpx.get(f"{url}/servicenow/nav_to.do?uri=incident.do?sys_id=nope", timeout=10)
        assert wrong.status_code == 404
