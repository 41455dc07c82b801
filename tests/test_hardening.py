"""The outside review's findings, each as it was reproduced: hostile alert text, paths, error
messages and unauthenticated clients, against the real intake, clients and simulators."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from markdown_it import MarkdownIt
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from pydantic import SecretStr

from riposte.alerts.messages import MessageRenderer
from riposte.alerts.model import safe_portal_url
from riposte.alerts.response import Ticket
from riposte.blocks.errors import ExternalServiceError, ServiceNotFoundError
from riposte.sandbox.samples import sample_graph_alerts
from tests.alert_factory import make_alert
from tests.conftest import INTAKE_TOKEN, wait_until
from tests.servers import serve_in_thread

PHISH = (
    "Hidden file ran [Approve isolation now](https://evil.example/approve) **URGENT** <!channel> "
    "<https://evil.example/x|Approve> <img src=https://evil.example/p.png>"
)


@pytest.fixture
def blocks(sandbox: httpx.Client, sandbox_url: str, sandbox_config: Any) -> dict[str, Any]:
    from riposte.deployments.local import sandbox_blocks

    return sandbox_blocks(sandbox_url, sandbox_config)


TICKET = Ticket(system="servicenow", key="INC0010001", id="abc", url="https://x/inc", created=True)


# --- 2. alert text that phishes through chat -----------------------------------------------------


def test_a_phishing_title_stays_text_in_slack_fallback_and_teams() -> None:
    alert = make_alert(title=PHISH, portal_url="https://evil.example/portal")
    renderer = MessageRenderer()
    slack = renderer.slack(alert, TICKET)
    assert "<!channel>" not in slack["text"] and "<https://evil" not in slack["text"]
    assert "&lt;!channel&gt;" in slack["text"]
    assert "evil.example/portal" not in json.dumps(slack)  # no portal link off Microsoft's hosts
    teams = renderer.teams(alert, TICKET)
    card = teams["attachments"][0]["content"]
    # Every element that carries text is a text run: Teams reads no markdown in those.
    assert {b["type"] for b in card["body"]} == {"RichTextBlock"}
    assert card["body"][0]["inlines"][0]["text"] == PHISH
    assert [a["title"] for a in card["actions"]] == ["Open INC0010001"]  # no evil button


def test_slack_makes_no_link_or_mention_of_alert_text() -> None:
    """Slack links bare URLs in mrkdwn unless the text object is verbatim, and in a message's
    own text: what the simulator (after Slack's documented parsing) would render as links."""
    from riposte.sandbox.chat import slack_rendering

    # The simulator sees what Slack sees: a bare URL, a manual link and a mention.
    naive = {"text": "Hidden file ran https://evil.example/a <https://evil.example/b|ok> <!here>"}
    assert slack_rendering(naive) == {
        "links": ["https://evil.example/b", "https://evil.example/a"],
        "mentions": ["!here"],
    }
    title = (
        PHISH + " see www.evil.example/w and HTTP://EVIL.EXAMPLE/c _https://evil.example/i_"
        " https://ok.example/?u=http://evil2.example/p"
    )
    alert = make_alert(title=title, portal_url="https://security.microsoft.com/alerts/da1")
    message = MessageRenderer().slack(alert, TICKET)
    assert slack_rendering(message) == {
        "links": [TICKET.url, "https://security.microsoft.com/alerts/da1"],
        "mentions": [],
    }
    # The notification text is defanged too: no client makes a link of it.
    assert "hxxps[://]evil[.]example/approve" in message["text"]
    assert "www[.]evil[.]example/w" in message["text"]
    assert "_hxxps[://]evil[.]example/i_" in message["text"]
    assert "?u=hxxp[://]evil2[.]example/p" in message["text"]
    assert slack_rendering({"text": message["text"]}) == {"links": [], "mentions": []}


def test_portal_links_are_kept_only_on_the_vendors_hosts() -> None:
    kept = [
        "https://security.microsoft.com/alerts/da637?tid=1",
        "https://portal.azure.com/#blade/Microsoft_Azure_Security/AlertBlade/alertId/1",
        "https://contoso.eu2.portal.cloudappsecurity.com/#/alerts/5f1",
    ]
    for url in kept:
        assert safe_portal_url(url) == url
    for url in (
        "https://evil.example/approve",
        "javascript:alert(1)",
        "http://security.microsoft.com/alerts/1",
        "https://security.microsoft.com.evil.example/",
        "https://user:pw@security.microsoft.com/",
        "https://security.microsoft.com/x|Approve now>",
        "https://security.microsoft.com/a b",
        "https://security.microsoft.com:8443/",
    ):
        assert safe_portal_url(url) is None, url
    assert make_alert(portal_url="https://evil.example/").portal_url is None


def test_the_approval_card_and_timeout_notice_carry_the_title_as_text() -> None:
    from riposte.alerts.approval import ApproverRef, ContainmentRequest
    from riposte.alerts.containment import ActionKind, ContainmentAction
    from riposte.alerts.response import AlertRef
    from riposte.blocks import TeamsWorkflowWebhook
    from riposte.tasks.approvals import approval_message

    request = ContainmentRequest(
        alert=AlertRef(source="graph", alert_id="a-1", revision="high"),
        alert_title=PHISH,
        severity="high",
        rule="r",
        actions=(ContainmentAction(kind=ActionKind.BLOCK_IP, target="185.220.101.34", label="x"),),
        approvers=(ApproverRef(name="a@b.c", channels=("teams-workflow-webhook/t",)),),
        timeout_seconds=600,
        on_timeout="reject",
        defender_block="riposte-defender",
    )
    teams = TeamsWorkflowWebhook(url=SecretStr("https://example.invalid/x"), channel="SOC")
    links = {"approve": "https://intake/approvals/a", "reject": "https://intake/approvals/r"}
    card = approval_message(teams, request, "a@b.c", links, datetime.now(UTC))
    assert isinstance(card, dict)
    content = card["attachments"][0]["content"]
    assert {b["type"] for b in content["body"]} == {"RichTextBlock"}
    assert [a["url"] for a in content["actions"]] == [links["approve"], links["reject"]]

    from riposte.blocks import SlackIncomingWebhook
    from riposte.sandbox.chat import slack_rendering

    slack = SlackIncomingWebhook(url=SecretStr("https://example.invalid/x"), channel="soc")
    message = approval_message(slack, request, "a@b.c", links, datetime.now(UTC))
    assert isinstance(message, dict)
    # Slack links the approver's two links and nothing of the alert's title.
    assert slack_rendering(message) == {
        "links": [links["approve"], links["reject"]],
        "mentions": [],
    }
    # With a ticket, its link is ours too, and stays a link (not defanged text).
    with_ticket = request.model_copy(update={"ticket": TICKET})
    message = approval_message(slack, with_ticket, "a@b.c", links, datetime.now(UTC))
    assert isinstance(message, dict)
    assert slack_rendering(message)["links"] == [TICKET.url, links["approve"], links["reject"]]


# --- 4. HTML and markdown through the response report -------------------------------------------


def test_the_response_report_shows_the_title_and_reasons_as_text() -> None:
    from riposte.flows.respond import ResponseSummary, _report
    from riposte.playbooks import ActionResult

    summary = ResponseSummary(
        alert_id="a-1",
        source="graph",
        severity="high",
        title=PHISH + " | col",
        portal_url="https://security.microsoft.com/alerts/a-1(x)",
        policy="p",
        policy_sha256="0" * 64,
        policy_fallback=False,
        matched_rules=["r"],
        actions=[
            ActionResult(rule="r", playbook="p", disposition="ticket", reason="ip=<img src=x>")
        ],
    )
    report = _report(summary)
    title_line = report.splitlines()[2]
    assert title_line.startswith("`") and "<img" in title_line  # inside a code span: text
    assert title_line.count("`") == 2 and "\\|" in title_line
    assert "| why | `ip=<img src=x>` |" in report
    assert "(https://security.microsoft.com/alerts/a-1%28x%29)" in report


# A backslash before a pipe: `\|` escaped naively is `\\|`, whose pipe ends the cell for GFM
# (marked counts the backslashes), which lets the rest out of the code span as markdown.
CELL_BREAKOUT = "\\|![p](https://evil.example/p.png)"
UNESCAPED_PIPE = re.compile(r"(?<!\\)(?:\\\\)*\|")


def _assert_cells_hold(markdown: str, columns: int) -> None:
    """Every table row of ``markdown`` has ``columns`` cells, and nothing outside its code
    spans is a link or an image."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(rows) > 2, markdown
    for row in rows:
        assert len(UNESCAPED_PIPE.findall(row)) == columns + 1, row
        outside = re.sub(r"`[^`]*`", "", row)
        assert "](" not in outside and "evil.example" not in outside, row
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<img" not in html and 'evil.example/p.png"' not in html, html


def test_a_backslash_before_a_pipe_never_ends_a_cell_of_the_run_reports() -> None:
    from riposte.alerts.approval import ContainmentRequest
    from riposte.alerts.containment import ActionKind, ContainmentAction
    from riposte.alerts.response import AlertRef
    from riposte.flows.contain import AuditRow, outcome_markdown
    from riposte.flows.respond import ResponseSummary, _markdown_text, _report
    from riposte.playbooks import ActionResult

    shown = _markdown_text("a" + CELL_BREAKOUT + "\x1b[31m\u202e")
    assert shown == "`a\u29f5\\|![p](https://evil.example/p.png)\\x1b[31m\\u202e`"
    assert "\x1b" not in shown and "\u202e" not in shown  # escaped, shown as text

    hostile = "Invoice " + CELL_BREAKOUT
    summary = ResponseSummary(
        alert_id="a-1",
        source="graph",
        severity="high",
        title=hostile,
        portal_url=None,
        policy="p",
        policy_sha256="0" * 64,
        policy_fallback=False,
        matched_rules=["r"],
        actions=[
            ActionResult(
                rule="r",
                playbook="p",
                disposition="close",
                reason="ip " + CELL_BREAKOUT,
                closed="benign " + CELL_BREAKOUT,
                notes=["note " + CELL_BREAKOUT, "\\\\" + CELL_BREAKOUT],
            )
        ],
    )
    report = _report(summary)
    _assert_cells_hold(report, 2)
    assert "| why | `ip \u29f5\\|![p](https://evil.example/p.png)` |" in report

    block = ContainmentAction(kind=ActionKind.BLOCK_URL, target=hostile, label=hostile)
    request = ContainmentRequest(
        alert=AlertRef(source="graph", alert_id="cell-1"),
        alert_title=hostile,
        severity="high",
        rule="r",
        actions=(block,),
        defender_block="riposte-defender",
    )
    rows = [
        AuditRow(at="t", who="x " + CELL_BREAKOUT, what=CELL_BREAKOUT, parameters="", result=r)
        for r in (hostile, "FAILED: " + CELL_BREAKOUT + "|" + CELL_BREAKOUT)
    ]
    outcome = outcome_markdown(request, uuid4(), "approved, done", hostile, rows)
    _assert_cells_hold(outcome, 3)


def test_log_lines_of_a_response_defang_alert_text_but_keep_our_links() -> None:
    from riposte.alerts.plain import log_text
    from riposte.alerts.response import Delivery
    from riposte.flows.respond import outcome_lines
    from riposte.playbooks import ActionResult

    assert log_text("a\x1b[31mhttps://evil.example/x\nftp://y \u202e") == (
        "a[31mhttps[:]//evil.example/x ftp[:]//y"
    )
    page = "http://127.0.0.1:4200/runs/flow-run/0b0e8f1e-3c5b-4d4e-9a55-0f0f0f0f0f0f"
    action = ActionResult(
        rule="r",
        playbook="escalate",
        disposition="ticket",
        reason="r",
        ticket=TICKET,
        deliveries=[
            Delivery(channel="slack:#soc", delivered=False, detail="refused: https://evil.example")
        ],
        closed="benign: see https://evil.example/c",
        containment=f"not possible: Block URL https://evil.example/u\x1b[31m: run {page}",
        containment_url=page,
        notes=["note on INC1: https://evil.example/n"],
    )
    lines = outcome_lines(action)
    assert "ticket link: https://x/inc" in lines  # ours: a link
    assert f"containment: not possible: Block URL https[:]//evil.example/u[31m: run {page}" in lines
    assert "message to slack:#soc NOT sent: refused: https[:]//evil.example" in lines
    assert "closed at the source: benign: see https[:]//evil.example/c" in lines
    assert "playbook: note on INC1: https[:]//evil.example/n" in lines
    assert not [line for line in lines if re.search(r"(?:https?|ftp)://\S*evil", line)], lines
    assert not [line for line in lines if "\x1b" in line], lines


# --- 5. ServiceNow [code] ---------------------------------------------------------------------


def test_servicenow_never_receives_a_code_tag(blocks: Any, sandbox: httpx.Client) -> None:
    from riposte.alerts.response import Priority, TicketDraft

    client = blocks["riposte-servicenow"].get_client()
    ticket = client.create(
        TicketDraft(
            correlation_key="riposte-graph-code-1",
            summary="[CODE]<b>x</b>[/code]",
            description="cmd: [code]<script>alert(1)</script>[/code] and [ Code ]",
            priority=Priority.LOW,
            source_label="t",
        )
    )
    client.add_note(ticket, "reason: [code]<img src=x onerror=alert(1)>[/CODE]")
    (record,) = sandbox.get("/_sandbox/servicenow/incidents").json()
    stored = json.dumps(record).lower()
    assert "[code]" not in stored and "[/code]" not in stored and "[ code ]" not in stored
    assert "(code)<script>" in stored


# --- 6. ids are values --------------------------------------------------------------------------


def test_a_graph_alert_id_never_leaves_the_alerts_path(blocks: Any, sandbox: httpx.Client) -> None:
    graph = blocks["riposte-defender"].source_client("graph")
    with pytest.raises(ServiceNotFoundError):
        graph.get("../../../../_sandbox/faults")


def test_the_intake_refuses_ids_that_are_paths(intake_url: str) -> None:
    for bad, why in (
        ("../../../../_sandbox/faults", "path separator"),
        ("a\x00b", "control character"),
        ("x" * 300, "longer than 256"),
    ):
        alert = sample_graph_alerts(datetime.now(UTC))[0] | {"id": bad}
        r = httpx.post(
            f"{intake_url}/alerts/graph",
            json=alert,
            headers={"Authorization": f"Bearer {INTAKE_TOKEN}"},
            timeout=60,
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("alert [0]: id: ") and why in r.json()["detail"]


# --- 7. errors never carry URLs -----------------------------------------------------------------


@pytest.fixture
def echoing_server() -> Iterator[str]:
    """A server that echoes the request's path and query in its 404, as some do."""
    app = FastAPI()

    @app.post("/{rest:path}")
    async def echo(rest: str, request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"no route for {request.url} ({request.url.path})", 404)

    with serve_in_thread(app) as url:
        yield url


def test_a_webhook_secret_echoed_by_a_server_stays_out_of_the_error(echoing_server: str) -> None:
    from riposte.blocks import SlackIncomingWebhook

    secret = "T0SECRET/B0SECRET/xoxsecretpathvalue1234"
    block = SlackIncomingWebhook(
        url=SecretStr(f"{echoing_server}/services/{secret}?token=querysecret"),
        channel="soc",
        timeout_seconds=5,
    )
    with pytest.raises(ExternalServiceError) as caught:
        block.get_client().post({"text": "hi"})
    message = str(caught.value)
    for part in ("xoxsecretpathvalue1234", "B0SECRET", "querysecret", "/services/"):
        assert part not in message, message
    assert "404" in message


# --- 3 and 8. unauthenticated clients -----------------------------------------------------------


def _raw(host: str, port: int, request: bytes, wait: float = 10.0) -> bytes:
    """Send ``request`` and read the answer until the server closes the connection (these
    answers close it) or ``wait`` runs out: the head and the body may come in two reads."""
    answer = b""
    deadline = time.monotonic() + wait
    with socket.create_connection((host, port), timeout=wait) as s:
        s.sendall(request)
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
    return answer


def test_the_intake_refuses_before_it_reads_a_body(intake_url: str) -> None:
    """A client that announces 1 MB and sends none of it: refused at once, not held."""
    host, port = intake_url.removeprefix("http://").split(":")
    head = (
        f"POST /alerts/graph HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {1024 * 1000}\r\n"
    )
    for auth in ("", "Authorization: Bearer wrong\r\n", "X-Riposte-Signature: t=1,v1=00\r\n"):
        started = time.monotonic()
        answer = _raw(host, int(port), (head + auth + "\r\n").encode())
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert time.monotonic() - started < 5


def test_an_authenticated_sender_that_stalls_gets_408_and_others_are_answered(
    intake_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import riposte.deployments.intake as intake

    monkeypatch.setattr(intake, "BODY_SECONDS", 1.0)
    host, port = intake_url.removeprefix("http://").split(":")
    stalled = (
        f"POST /alerts/graph HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {INTAKE_TOKEN}\r\nContent-Length: 5000\r\n\r\n{{"
    ).encode()
    answer = _raw(host, int(port), stalled)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s" in answer


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 - a tiny procfs read
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_sockets(pid: int) -> int:
    import os

    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if "socket" in _readlink(pid, fd))


def _readlink(pid: int, fd: str) -> str:
    import os

    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


@pytest.mark.e2e
def test_300_unauthenticated_slow_clients_hold_neither_memory_nor_sockets(
    prefect_server: str, tmp_path: Any
) -> None:
    """The review's load: 300 unauthenticated clients, each announcing 1 MB and sending part of
    it slowly; then 50 that hang up mid-body. The intake (as `riposte intake` runs it) answers
    each at once, keeps its memory, closes their sockets, logs little, and meanwhile answers an
    authenticated alert."""
    import os
    import subprocess
    import sys

    from tests.servers import free_port

    port = free_port()
    log = tmp_path / "intake.log"
    token = "load-test-token-" + os.urandom(8).hex()
    env = {
        **os.environ,
        "RIPOSTE_INTAKE_PORT": str(port),
        "RIPOSTE_INTAKE_TOKENS": token,
        # Its own journal: the session's intake holds the default one.
        "RIPOSTE_INTAKE_JOURNAL": str(tmp_path / "journal"),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riposte.deployments.intake"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        before = _rss_kib(proc.pid)
        head = (
            f"POST /alerts/graph HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {1024 * 1024}\r\n\r\n"
        ).encode()
        clients = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(head + b"[" + b" " * 60_000)  # the start of a body, never finished
            clients.append(s)
        answered = httpx.post(
            f"{url}/alerts/graph",
            json=sample_graph_alerts(datetime.now(UTC))[0],
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert answered.status_code in (202, 503), answered.text  # answered, not held
        statuses = [s.recv(64).split(b"\r\n")[0] for s in clients]
        # Refused at once: 401 before the body is read, or 503 from the connection limit.
        refusals = {b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 503 Service Unavailable"}
        assert set(statuses) <= refusals and b"HTTP/1.1 401 Unauthorized" in statuses, statuses
        grown = _rss_kib(proc.pid) - before
        # The intake closes each refused connection itself, while its client still holds it.
        held = wait_until(
            lambda: (n := _open_sockets(proc.pid)) < 50 and n, timeout=30, what="sockets closed"
        )
        for s in clients:
            s.close()
        for _ in range(50):  # hang up mid-body
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(head + b"[1,2")
        wait_until(lambda: _open_sockets(proc.pid) < 50, timeout=30, what="hung-up sockets gone")
        print(
            f"\nintake: {statuses.count(b'HTTP/1.1 401 Unauthorized')} x 401, "
            f"{statuses.count(b'HTTP/1.1 503 Service Unavailable')} x 503, +{grown} KiB RSS for "
            f"300 slow clients, {held} sockets open after, log {len(log.read_bytes())} bytes"
        )
        assert grown < 60 * 1024, f"the intake grew by {grown} KiB"
        assert len(log.read_bytes()) < 20_000, log.read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_jira_links_only_the_defender_portal_never_an_alert_s_url() -> None:
    from riposte.alerts.adf import to_adf
    from riposte.alerts.response import Priority, Route

    alert = make_alert(
        description="Reset your password at https://evil.example/reset now",
        portal_url="https://security.microsoft.com/alerts/a-1",
    )
    route = Route(priority=Priority.HIGH, open_ticket=True, notify=False, reason="r")
    adf = MessageRenderer().jira_description(alert, route)
    hrefs = [
        mark["attrs"]["href"]
        for node in _walk(adf)
        for mark in node.get("marks", [])
        if mark.get("type") == "link"
    ]
    assert hrefs == ["https://security.microsoft.com/alerts/a-1"]
    assert "https://evil.example/reset" in json.dumps(adf)  # shown, as text
    note = to_adf("approver's reason: see https://evil.example/x")
    assert "link" not in json.dumps(note)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.get("content", []) or []:
            yield from _walk(child)


@pytest.mark.e2e
@pytest.mark.usefixtures("served_flows")
def test_a_hostile_alert_pushed_through_the_intake_reaches_every_simulator_as_text(
    sandbox: httpx.Client, intake_url: str
) -> None:
    """The review's payloads in one Graph alert, answered by the session's policy (a ServiceNow
    ticket, Slack and Teams): what each simulator received holds them only as text."""
    import os

    from prefect.client.orchestration import get_client

    from tests.test_policy_e2e import load, push, wait_completed

    alert = sample_graph_alerts(datetime.now(UTC))[0]
    alert_id = f"hostile-{os.urandom(5).hex()}"
    alert.update(
        id=alert_id,
        providerAlertId=alert_id,
        title=PHISH + " [code]<script>alert(1)</script>[/code]",
        description="Click [here](javascript:alert(1)) or https://evil.example/r [code]x[/code]",
        alertWebUrl="https://evil.example/portal",
    )
    load(sandbox, [alert])
    (run,) = wait_completed(push(intake_url, [alert]))

    slack = [m for m in sandbox.get("/_sandbox/slack/messages").json() if alert_id in json.dumps(m)]
    assert len(slack) == 1
    payload = slack[0]["payload"] if "payload" in slack[0] else slack[0]
    text = json.dumps(payload)
    assert "<!channel>" not in text and "<https://evil" not in text
    assert "evil.example/portal" not in text
    # What Slack would make of it: one link (the ticket), no mention, no URL of the alert's.
    rendered = slack[0]["rendered"]
    assert rendered["mentions"] == []
    assert len(rendered["links"]) == 1 and "evil" not in rendered["links"][0], rendered

    teams = [m for m in sandbox.get("/_sandbox/teams/messages").json() if alert_id in json.dumps(m)]
    assert len(teams) == 1
    card = teams[0]["payload"]["attachments"][0]["content"]
    assert {b["type"] for b in card["body"]} == {"RichTextBlock"}
    assert all("evil.example" not in a["url"] for a in card.get("actions", []))

    incidents = [
        i for i in sandbox.get("/_sandbox/servicenow/incidents").json() if alert_id in json.dumps(i)
    ]
    assert len(incidents) == 1
    stored = json.dumps(incidents[0]).lower()
    assert "[code]" not in stored and "[/code]" not in stored

    with get_client(sync_client=True) as client:
        # Its own: an unfiltered read returns one page of the whole session's.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    (report,) = [a for a in artifacts if a.flow_run_id == run.id and a.type == "markdown"]
    lines = str(report.data).splitlines()
    title = lines[2]
    assert title.startswith("`") and title.count("`") == 2, title  # one code span: text
    assert "evil.example/portal" not in str(report.data)


# --- lagging search -------------------------------------------------------------------------------


def test_find_or_create_stays_exactly_once_while_jira_search_lags(
    stack_blocks: list[str], sandbox: httpx.Client
) -> None:
    """Jira Cloud's search may not show an issue for a while after it was created: a retry
    whose first attempt created the issue (and was killed before its result was kept) finds it
    through the record of its creation and `reconcileIssues`, and opens no second one."""
    import os

    from riposte.alerts.response import Priority, TicketDraft
    from riposte.blocks import JiraCredentials
    from riposte.tasks.ledgers import TicketLedger, TicketRecords
    from riposte.tasks.tickets import _find_or_create, block_identity

    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 60}).raise_for_status()
    jira = JiraCredentials.load("riposte-jira")
    client = jira.get_client()
    key = f"riposte-graph-lag-{os.urandom(5).hex()}"
    group = f"riposte-t-lagging-{os.urandom(5).hex()}"
    draft = TicketDraft(
        correlation_key=key,
        group_key=group,
        summary="[Defender] lag",
        description="d",
        priority=Priority.HIGH,
        source_label="t",
    )
    first = _find_or_create(jira, draft, key, group, "riposte-graph-opener")
    assert first.created
    assert client.find(key) is None  # the search really lags: a plain find-or-create would dup
    again = _find_or_create(jira, draft, key, group, "riposte-graph-another")
    assert again.key == first.key and not again.created
    # The opener's own step again (a retry after its result was lost): still the opener, so
    # it announces the ticket rather than adding itself to it as a note.
    retried = _find_or_create(jira, draft, key, group, "riposte-graph-opener")
    assert retried.key == first.key and retried.created
    issues = [i for i in sandbox.get("/_sandbox/jira/issues").json() if key in json.dumps(i)]
    assert len(issues) == 1
    # The throttle's ledger counts it too, so the next alert of the group joins it.
    records = TicketRecords(block_identity(jira))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert TicketLedger(client, None).count_since(group, epoch) == 0  # search alone: blind
    ledger = TicketLedger(client, None, records)
    assert ledger.count_since(group, epoch) == 1
    opened = ledger.open_ticket_for(group)
    assert opened is not None and opened.key == first.key


def _lagging_draft(prefix: str) -> Any:
    import os

    from riposte.alerts.response import Priority, TicketDraft

    key = f"riposte-graph-{prefix}-{os.urandom(5).hex()}"
    return TicketDraft(
        correlation_key=key,
        summary="[Defender] lost answer",
        description="d",
        priority=Priority.HIGH,
        source_label="t",
    )


@pytest.mark.parametrize("fault", [{"status": 502}, {"delay": 20.0}], ids=["502", "timeout"])
def test_a_jira_create_whose_answer_is_lost_makes_one_issue_while_search_lags(
    stack_blocks: list[str], sandbox: httpx.Client, fault: dict[str, Any]
) -> None:
    """Jira handled the create, then the answer was lost (a 502 from a proxy, a read timeout)
    while its search does not show the issue yet: the step reads the issues created since it
    took its floor, key by key (a read, not a search), and finds it instead of a second one."""
    from riposte.blocks import JiraCredentials
    from riposte.tasks.tickets import _find_or_create

    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 60}).raise_for_status()
    jira = JiraCredentials.load("riposte-jira").model_copy(update={"timeout_seconds": 2.0})
    # Someone else's issue first, so the floor is not simply zero.
    JiraCredentials.load("riposte-jira").get_client().create(_lagging_draft("other"))
    draft = _lagging_draft("lost")
    spec = {"service": "jira", "method": "POST", "path_contains": "/issue", "times": 1}
    sandbox.post(
        "/_sandbox/faults", json={**spec, **fault, "after_handling": True}
    ).raise_for_status()
    try:
        found = _find_or_create(jira, draft, draft.correlation_key, None)
    except ExternalServiceError:  # what the task's retry would do next
        found = _find_or_create(jira, draft, draft.correlation_key, None)
    issues = [
        i
        for i in sandbox.get("/_sandbox/jira/issues").json()
        if draft.correlation_key in json.dumps(i)
    ]
    assert [i["key"] for i in issues] == [found.key]
    assert found.created  # this step made it: its alert opened the ticket (and announces it)
    assert JiraCredentials.load("riposte-jira").get_client().find(draft.correlation_key) is None


def test_a_create_killed_after_it_was_sent_is_found_by_the_next_attempt(
    stack_blocks: list[str], sandbox: httpx.Client
) -> None:
    """The process was killed after the create left (no answer, no record): the next attempt
    sees the pending mark the first one left, and reads what was created since its floor."""
    from riposte.blocks import JiraCredentials
    from riposte.tasks.ledgers import TicketRecords
    from riposte.tasks.tickets import _find_or_create, block_identity

    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 60}).raise_for_status()
    jira = JiraCredentials.load("riposte-jira")
    client = jira.get_client()
    draft = _lagging_draft("killed")
    records = TicketRecords(block_identity(jira))
    # What the first attempt did before it died: its mark, then the create itself.
    floor = client.creation_floor()
    assert floor is not None
    records.mark_pending(draft.correlation_key, None, floor, by="riposte-graph-killed")
    made = client.create(draft)
    again = _find_or_create(jira, draft, draft.correlation_key, None, "riposte-graph-killed")
    assert again.key == made.key and again.created  # the step's own create, found again
    assert records.pending(draft.correlation_key, None) is None
    issues = [
        i
        for i in sandbox.get("/_sandbox/jira/issues").json()
        if draft.correlation_key in json.dumps(i)
    ]
    assert len(issues) == 1


@pytest.mark.e2e
@pytest.mark.usefixtures("served_flows")
def test_a_slack_post_whose_answer_is_lost_is_not_posted_again(
    sandbox: httpx.Client, intake_url: str
) -> None:
    """Slack took the message, then its answer never came (10 s timeout): a webhook cannot be
    asked, so the step does not post again (nor does its task retry). One message; the run
    completes and its report says the message is unconfirmed."""
    import os

    from prefect.client.orchestration import get_client

    from tests.test_policy_e2e import load, push, wait_completed

    alert = sample_graph_alerts(datetime.now(UTC))[0]
    alert_id = f"lost-answer-{os.urandom(5).hex()}"
    alert.update(id=alert_id, providerAlertId=alert_id)
    load(sandbox, [alert])
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "slack", "after_handling": True, "delay": 12.0, "times": 1},
    ).raise_for_status()
    (run,) = wait_completed(push(intake_url, [alert]), timeout=180)
    slack = [m for m in sandbox.get("/_sandbox/slack/messages").json() if alert_id in json.dumps(m)]
    assert len(slack) == 1
    with get_client(sync_client=True) as client:
        # Its own: an unfiltered read returns one page of the whole session's.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    (report,) = [a for a in artifacts if a.flow_run_id == run.id and a.type == "markdown"]
    assert "sent, unconfirmed" in str(report.data)


def test_a_create_found_later_by_the_search_stays_its_opener_s_and_refusals_leave_no_mark(
    stack_blocks: list[str], sandbox: httpx.Client
) -> None:
    """The create's answer was lost and the search caught up before the retry: the retry finds
    the ticket by search, and the pending mark says whose create made it (the opener stays the
    opener, so it announces the ticket). A create that was refused made nothing: its mark goes,
    so a later alert's create reads from a fresh floor of its own."""
    from riposte.blocks import JiraCredentials
    from riposte.tasks.ledgers import TicketRecords
    from riposte.tasks.tickets import _find_or_create, block_identity

    sandbox.post("/_sandbox/jira/settings", json={"search_lag_seconds": 0}).raise_for_status()
    jira = JiraCredentials.load("riposte-jira")
    client = jira.get_client()
    records = TicketRecords(block_identity(jira))
    draft = _lagging_draft("found-later").model_copy(update={"group_key": "riposte-t-grp"})
    key = draft.correlation_key
    floor = client.creation_floor()
    assert floor is not None
    records.mark_pending(key, "riposte-t-grp", floor, by="riposte-graph-alert-a")
    made = client.create(draft)  # what the lost create did
    again = _find_or_create(jira, draft, key, "riposte-t-grp", "riposte-graph-alert-a")
    assert again.key == made.key and again.created
    assert records.pending(key, "riposte-t-grp") is None
    other = _find_or_create(jira, draft, key, "riposte-t-grp", "riposte-graph-alert-b")
    assert other.key == made.key and not other.created

    refused = _lagging_draft("refused")
    sandbox.post(
        "/_sandbox/faults",
        json={
            "service": "jira",
            "method": "POST",
            "path_contains": "/issue",
            "status": 400,
            "times": 1,
        },
    ).raise_for_status()
    with pytest.raises(ExternalServiceError):
        _find_or_create(jira, refused, refused.correlation_key, None, "riposte-graph-alert-c")
    assert records.pending(refused.correlation_key, None) is None


def test_a_work_note_whose_answer_is_lost_is_sent_once(
    stack_blocks: list[str], sandbox: httpx.Client
) -> None:
    """A ServiceNow work note is appended to the journal: a PATCH carrying one is not repeated
    by the client after a lost answer (it was, up to four times); the step reads the notes
    before it writes again."""
    from riposte.blocks import ServiceNowCredentials
    from riposte.blocks.errors import OutcomeUnknownError

    snow = ServiceNowCredentials.load("riposte-servicenow")
    ticket = snow.get_client().find_or_create(_lagging_draft("note"))
    sandbox.post(
        "/_sandbox/faults",
        json={"service": "servicenow", "method": "PATCH", "delay": 3.0, "after_handling": True},
    ).raise_for_status()
    impatient = snow.model_copy(update={"timeout_seconds": 1.0})
    with pytest.raises(OutcomeUnknownError):
        impatient.get_client().add_note(ticket, "Riposte alert key: riposte-graph-x")
    notes = [n for n in snow.get_client().notes(ticket) if "riposte-graph-x" in n]
    assert len(notes) == 1
