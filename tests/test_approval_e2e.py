"""End to end: containment behind approval, through the intake, the responder, a real Prefect
server and the sandbox's Defender for Endpoint, Graph, ServiceNow, Slack and Teams.

Approve by link, reject, tampered, replayed, expired, the Prefect UI form, the timeout's default
outcome, an action that fails, and no containment before a yes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from markdown_it import MarkdownIt
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun

from riposte.alerts.approval import ApprovalKeys, ContainmentRequest, LinkClaims
from riposte.blocks.signing_keys import load_approval_keys
from riposte.sandbox.samples import sample_graph_alerts
from tests.conftest import PREFECT_API_URL, wait_until
from tests.test_policy_e2e import (
    graph_alerts,
    incidents,
    load,
    messages,
    notes,
    push,
    wait_completed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("served_flows")]

SLACK = "slack-incoming-webhook/riposte-slack"
TEAMS = "teams-workflow-webhook/riposte-teams"
ALICE, BOB = "alice@contoso.com", "bob@contoso.com"
LINK = re.compile(r"https?://[^\s|<>\"']+/approvals/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


def approval_policy(timeout: str = "10m") -> str:
    return f"""\
version: 1
defaults:
  ticket: {{system: servicenow}}
  channels: [{SLACK}]
  containment:
    approvers:
      - {{name: {ALICE}, channels: [{SLACK}]}}
      - {{name: {BOB}, channels: [{TEAMS}]}}
    timeout: {timeout}
    timeout_channels: [{TEAMS}]
rules:
  - name: block-at-once
    match: {{title_pattern: AUTOMATIC}}
    playbook: escalate
    containment: {{actions: [block_ip], automatic: true}}
  - name: isolate-host
    match: {{title_pattern: PowerShell}}
    playbook: escalate
    containment: {{actions: [isolate_device]}}
  - name: block-source
    match: {{title_pattern: suspicious IP}}
    playbook: escalate
    containment: {{actions: [block_ip]}}
fallback: {{playbook: ticket_and_notify}}
"""


@pytest.fixture(autouse=True)
def _no_request_left_waiting() -> Iterator[None]:
    """A request a test leaves unanswered times out minutes later, in another test's window,
    and posts its timeout message there: what is still waiting is cancelled after each test."""
    yield
    from prefect.client.schemas.filters import FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    waiting = FlowRunFilter(
        name=FlowRunFilterName(like_="contain-graph-appr-"),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
    )
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=waiting):
            client.set_flow_run_state(run.id, Cancelled(message="test over"), force=True)


def fresh(index: int, title: str | None = None) -> dict[str, Any]:
    """Graph sample ``index`` (0: PowerShell on an MDE device, 1: API access from a suspicious
    IP) under a new id."""
    alert = copy.deepcopy(sample_graph_alerts(datetime.now(UTC) - timedelta(minutes=2))[index])
    alert_id = f"appr-{os.urandom(6).hex()}"
    alert.update(id=alert_id, providerAlertId=alert_id)
    if title:
        alert["title"] = title
    return alert


def machine_of(alert: dict[str, Any]) -> str:
    for evidence in alert.get("evidence", []):
        if evidence.get("mdeDeviceId"):
            return str(evidence["mdeDeviceId"])
    raise AssertionError("the sample names no MDE device")


def respond(sandbox: httpx.Client, intake_url: str, alert: dict[str, Any]) -> FlowRun:
    """The response run of ``alert``, once it is over."""
    load(sandbox, [alert])
    (run,) = wait_completed(push(intake_url, [alert]))
    return run


def contain_run(alert: dict[str, Any], *, state: str | None = None, timeout: float = 90) -> FlowRun:
    name = f"contain-graph-{alert['id']}"

    def found() -> FlowRun | None:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        if len(runs) > 1:
            raise AssertionError(f"{len(runs)} containment runs for one request")
        run = runs[0] if runs else None
        if run is None or run.state is None:
            return None
        if state == "paused":
            return run if run.state.is_paused() else None
        if state == "final":
            return run if run.state.is_final() else None
        return run

    run: FlowRun = wait_until(found, timeout=timeout, interval=0.5, what=f"{name} ({state})")
    return run


def links(sandbox: httpx.Client) -> dict[tuple[str, str], str]:
    """(approver, decision) -> link, read from the messages the sandbox received."""
    keys = load_approval_keys()
    found: dict[tuple[str, str], str] = {}
    for kind in ("slack", "teams"):
        for message in messages(sandbox, kind):
            for match in LINK.finditer(json.dumps(message)):
                claims = LinkClaims.model_validate(keys.open(match.group(1)))
                found[(claims.approver, claims.decision)] = match.group(0)
    return found


def artifact_rows(run_id: UUID) -> list[dict[str, str]]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    tables = [
        a for a in artifacts if a.type == "table" and (a.key or "").startswith("containment-")
    ]
    assert len(tables) == 1, [a.key for a in artifacts]
    data = tables[0].data
    rows: list[dict[str, str]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    return rows


def artifacts_of(run_id: UUID) -> list[Artifact]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )


def audit_table(run: FlowRun) -> Artifact:
    (table,) = [a for a in artifacts_of(run.id) if a.type == "table"]
    return table


def outcome_on(response: FlowRun, timeout: float = 30) -> Artifact:
    """The containment's outcome, shown on the response run that asked for it."""

    def shown() -> Artifact | None:
        found = [
            a for a in artifacts_of(response.id) if (a.key or "").startswith("containment-outcome-")
        ]
        assert len(found) <= 1, [a.key for a in found]
        return found[0] if found else None

    artifact: Artifact = wait_until(shown, timeout=timeout, what="the containment's outcome")
    return artifact


def page_of(run: FlowRun) -> str:
    """The run's page in the Prefect UI (the API's address without `/api`)."""
    return f"{PREFECT_API_URL.removesuffix('/api')}/runs/flow-run/{run.id}"


def form(run: FlowRun, part: str) -> Any:
    """A part (description, schema) of a suspended run's Resume form, read as the Prefect UI
    reads it: the keys the paused state names, from the flow run's inputs."""
    assert run.state is not None and run.state.state_details.run_input_keyset is not None
    key = run.state.state_details.run_input_keyset[part]
    answer = httpx.get(f"{PREFECT_API_URL}/flow_runs/{run.id}/input/{key}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def log_lines(run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def wait_for_log(run_id: UUID, text: str) -> list[str]:
    lines: list[str] = wait_until(
        lambda: (found := log_lines(run_id)) and any(text in m for m in found) and found,
        timeout=30,
        what=f"the log line {text!r}",
    )
    return lines


def rendered(markdown: str) -> str:
    """``markdown`` as HTML, as a CommonMark renderer with tables shows it."""
    return MarkdownIt("commonmark").enable("table").render(markdown)


def key_of(alert: dict[str, Any], prefix: str = "containment") -> re.Pattern[str]:
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-graph-{alert['id']}".lower())
    return re.compile(re.escape(slug) + r"-[0-9a-f]{8}")


def alert_comments(sandbox: httpx.Client, alert_id: str) -> list[str]:
    return [c["comment"] for c in graph_alerts(sandbox)[alert_id]["comments"]]


def ticket_notes(sandbox: httpx.Client) -> list[str]:
    return [note for incident in incidents(sandbox) for note in notes(incident)]


def isolations(sandbox: httpx.Client) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = sandbox.get("/_sandbox/mde/machineactions").json()
    return [a for a in actions if a["type"] == "Isolate"]


def indicators(sandbox: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = sandbox.get("/_sandbox/mde/indicators").json()
    return found


@pytest.fixture
def containment_policy(use_policy: Callable[[str], None]) -> Callable[[str], None]:
    def write(timeout: str = "10m") -> None:
        use_policy(approval_policy(timeout))

    write()
    return write


@pytest.fixture
def device_alert(sandbox: httpx.Client) -> dict[str, Any]:
    alert = fresh(0)
    sandbox.post("/_sandbox/mde/machines", json={"id": machine_of(alert)}).raise_for_status()
    return alert


@pytest.mark.usefixtures("containment_policy")
def test_approve_by_link_contains_once_and_audits_everywhere(
    sandbox: httpx.Client, intake_url: str, device_alert: dict[str, Any]
) -> None:
    response = respond(sandbox, intake_url, device_alert)
    run = contain_run(device_alert, state="paused")
    found = links(sandbox)
    assert set(found) == {(ALICE, "approve"), (ALICE, "reject"), (BOB, "approve"), (BOB, "reject")}
    # The response's report links the containment run's page, where it waits.
    (report,) = [a for a in artifacts_of(response.id) if (a.key or "").startswith("response-")]
    assert f"[open the containment run]({page_of(run)})" in str(report.data), report.data
    # Suspended, and nothing contained before a yes.
    assert isolations(sandbox) == []

    page = httpx.get(found[(ALICE, "approve")], timeout=30)
    assert page.status_code == 200, page.text
    assert "Approve containment?" in page.text and ALICE in page.text
    assert "Isolate device" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert isolations(sandbox) == []  # looking at the page decides nothing

    taken = httpx.post(
        found[(ALICE, "approve")], data={"reason": "confirmed with the owner"}, timeout=30
    )
    assert taken.status_code == 200, taken.text
    assert "approved" in taken.text

    done = contain_run(device_alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    assert "approved by alice@contoso.com by signed link" in (done.state.message or "")
    (isolation,) = isolations(sandbox)
    assert isolation["machineId"] == machine_of(device_alert)
    assert isolation["status"] == "Succeeded"

    rows = artifact_rows(run.id)
    decision = [r for r in rows if r["what"] == "approve"]
    assert len(decision) == 1 and decision[0]["who"] == ALICE
    assert "confirmed with the owner" in decision[0]["result"]
    assert any(
        r["what"].startswith("Isolate device") and r["result"].startswith("succeeded") for r in rows
    )
    assert sum("asked" in r["what"] for r in rows) == 2
    # Named after the alert, its title in the description (as text).
    table = audit_table(run)
    assert key_of(device_alert).fullmatch(table.key or ""), table.key
    assert f"`{device_alert['title']}`" in (table.description or ""), table.description
    assert "approved, done" in (table.description or "")
    # After the resume, the log says what resumed the run; it was suspended once.
    lines = wait_for_log(
        run.id, "Resumed: approved by alice@contoso.com by signed link: confirmed with the owner"
    )
    assert sum("Suspending flow run" in m for m in lines) == 1, lines
    # The response run shows the outcome, linking the containment run.
    outcome = outcome_on(response)
    assert key_of(device_alert, "containment-outcome").fullmatch(outcome.key or ""), outcome.key
    assert "approved, done" in (outcome.description or "")
    text = str(outcome.data)
    assert ": approved, done" in text.splitlines()[0], text
    assert f"[Open the containment run]({page_of(run)})" in text
    assert "`Isolate device" in text and "`approve`" in text and f"`{ALICE}`" in text
    assert any(
        "approved by alice@contoso.com by signed link" in c
        for c in alert_comments(sandbox, device_alert["id"])
    )
    assert any("approved by alice@contoso.com by signed link" in n for n in ticket_notes(sandbox))

    # Replayed: the same link, and the other approver's links, find the decision taken.
    again = httpx.post(found[(ALICE, "approve")], data={"reason": "again"}, timeout=30)
    assert again.status_code == 409 and "already taken" in again.text
    assert ALICE in again.text
    other = httpx.post(found[(BOB, "reject")], data={}, timeout=30)
    assert other.status_code == 409
    assert len(isolations(sandbox)) == 1


@pytest.mark.usefixtures("containment_policy")
def test_reject_by_link_contains_nothing_and_forged_links_are_refused(
    sandbox: httpx.Client, intake_url: str
) -> None:
    alert = fresh(1)
    respond(sandbox, intake_url, alert)
    contain_run(alert, state="paused")
    found = links(sandbox)

    # A reject link turned into an approve link: the signature no longer matches.
    token = found[(BOB, "reject")].rsplit("/", 1)[1]
    payload, signature = token.split(".")
    body = json.loads(_unb64(payload))
    body["decision"] = "approve"
    tampered = found[(BOB, "reject")].replace(token, f"{_b64(json.dumps(body))}.{signature}")
    for method in (httpx.get, httpx.post):
        refused = method(tampered, timeout=30)
        assert refused.status_code == 401, refused.text
    # A well-formed link signed with a key Riposte does not hold.
    claims = LinkClaims.model_validate(load_approval_keys().open(token))
    foreign = ApprovalKeys([os.urandom(40).hex()]).sign(claims)
    assert httpx.post(found[(BOB, "reject")].replace(token, foreign), timeout=30).status_code == 401

    taken = httpx.post(found[(BOB, "reject")], data={"reason": "known pentest"}, timeout=30)
    assert taken.status_code == 200, taken.text
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed()
    message = done.state.message or ""
    assert "rejected by bob@contoso.com by signed link: known pentest" in message
    assert "Nothing was executed" in message
    assert indicators(sandbox) == [] and isolations(sandbox) == []
    assert httpx.post(found[(ALICE, "approve")], timeout=30).status_code == 409
    assert any("rejected by bob@contoso.com" in n for n in ticket_notes(sandbox))


@pytest.mark.usefixtures("containment_policy")
def test_a_well_signed_link_for_someone_who_is_not_an_approver_decides_nothing(
    sandbox: httpx.Client, intake_url: str
) -> None:
    """The review's forgery: with the signing key in hand, a link minted for someone the policy
    never named. The intake checks the approver against the request, not only the signature."""
    alert = fresh(1)
    respond(sandbox, intake_url, alert)
    contain_run(alert, state="paused")
    real = links(sandbox)[(ALICE, "approve")]
    token = real.rsplit("/", 1)[1]
    keys = load_approval_keys()
    claims = LinkClaims.model_validate(keys.open(token))
    minted = keys.sign(claims.model_copy(update={"approver": "ciso@example.com"}))
    forged = real.replace(token, minted)
    for method in (httpx.get, httpx.post):
        refused = method(forged, timeout=30)
        assert refused.status_code == 401, refused.text
        assert "not made for one of this request's approvers" in refused.text
    assert indicators(sandbox) == []
    still = contain_run(alert, state="paused")  # still waiting for a real approver
    assert still.state is not None and still.state.is_paused()
    taken = httpx.post(real, data={"reason": "ok"}, timeout=30)
    assert taken.status_code == 200, taken.text
    done = contain_run(alert, state="final")
    assert "approved by alice@contoso.com by signed link" in (done.state.message or "")  # type: ignore[union-attr]


def test_links_that_took_longer_to_send_than_the_timeout_still_time_out(
    sandbox: httpx.Client, intake_url: str, containment_policy: Callable[[str], None]
) -> None:
    """Bob's Teams message takes 9 s and the timeout is 1 s: the sweep booked when the links
    went out runs before the run is suspended, and finds nothing to do. The run books another
    for just after its suspension, so the default outcome still applies in seconds, not at
    the sweep's hourly schedule (seen in CI on a slow machine, with a 3 s timeout)."""
    containment_policy("1s")
    sandbox.post(
        "/_sandbox/faults", json={"service": "teams", "delay": 9.0, "times": 1}
    ).raise_for_status()
    alert = fresh(1)
    respond(sandbox, intake_url, alert)
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed()
    assert "by the policy's default outcome (nobody answered in time)" in (done.state.message or "")


def test_timeout_applies_the_default_outcome_and_expired_links_say_so(
    sandbox: httpx.Client, intake_url: str, containment_policy: Callable[[str], None]
) -> None:
    from riposte.flows.contain import expire_approvals

    containment_policy("3s")
    alert = fresh(1)
    response = respond(sandbox, intake_url, alert)
    run = contain_run(alert, state="paused")
    found = links(sandbox)
    teams_before = len(messages(sandbox, "teams"))
    wait_until(
        lambda: httpx.get(found[(ALICE, "approve")], timeout=30).status_code == 410,
        timeout=30,
        what="the link to expire",
    )
    expired = httpx.post(found[(ALICE, "approve")], timeout=30)
    assert expired.status_code == 410 and "expired" in expired.text

    # The sweep booked for the deadline applies the default outcome (the session's sweep
    # schedule is an hour): a sweep run afterwards finds nothing left to do.
    done = contain_run(alert, state="final")
    assert str(run.id) not in asyncio.run(expire_approvals())
    with get_client(sync_client=True) as client:
        sweeps = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["approval-sweep"]))
        )
    assert any(
        str(run.id) in (s.idempotency_key or "") and s.state is not None and s.state.is_completed()
        for s in sweeps
    ), [(s.idempotency_key, s.state) for s in sweeps]
    assert done.state is not None and done.state.is_completed()
    message = done.state.message or ""
    assert "rejected by nobody by the policy's default outcome (nobody answered in time)" in message
    assert indicators(sandbox) == []
    # The timeout channel was told; the decision is now taken.
    told = messages(sandbox, "teams")[teams_before:]
    assert any("No answer in time" in json.dumps(m) for m in told)
    assert httpx.post(found[(BOB, "approve")], timeout=30).status_code == 409
    rows = artifact_rows(run.id)
    assert any(
        r["what"] == f"escalated the missed approval to {TEAMS}" and r["result"] == "told"
        for r in rows
    )
    wait_for_log(run.id, "Resumed: rejected by nobody by the policy's default outcome")
    outcome = outcome_on(response)
    said = "no answer in time: rejected by the policy's default, nothing executed"
    assert said in (outcome.description or "") and said in str(outcome.data)


@pytest.mark.usefixtures("containment_policy")
def test_approved_in_the_prefect_ui_form_is_recorded_as_such(
    sandbox: httpx.Client, intake_url: str
) -> None:
    alert = fresh(1)
    respond(sandbox, intake_url, alert)
    run = contain_run(alert, state="paused")
    with get_client(sync_client=True) as client:
        # What the UI's Resume form sends: the typed fields, no proof.
        client.resume_flow_run(
            run.id,
            run_input={"decision": "approve", "reason": "seen in the SIEM", "approver": "carol"},
        )
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    message = done.state.message or ""
    assert "approved by carol (identity not proven) in the Prefect UI form" in message
    (indicator,) = indicators(sandbox)
    assert indicator["indicatorValue"] in json.dumps(alert)
    assert any("carol (identity not proven)" in c for c in alert_comments(sandbox, alert["id"]))
    # The links now find the run decided.
    assert httpx.post(links(sandbox)[(ALICE, "approve")], timeout=30).status_code == 409
    lines = wait_for_log(
        run.id, "Resumed: approved by carol (identity not proven) in the Prefect UI form"
    )
    assert sum("Suspending flow run" in m for m in lines) == 1, lines


HOSTILE = (
    "API access from suspicious IP [verify](http://evil.example/v) ![p](http://evil.example/p)"
    " <img src=x onerror=alert(1)> <@U024BE7LH> @channel **now** `rm -rf` | next"
)


@pytest.mark.usefixtures("containment_policy")
def test_the_resume_form_describes_the_request_and_the_response_run_gets_the_outcome(
    sandbox: httpx.Client, intake_url: str
) -> None:
    """What a person sees in the Prefect UI: the Resume form of the Suspended run says what is
    asked, the alert's (hostile) title shown as text; the response run links the containment
    run and, once decided, shows how it ended."""
    alert = fresh(1, title=HOSTILE)
    response = respond(sandbox, intake_url, alert)
    run = contain_run(alert, state="paused")
    request = ContainmentRequest.model_validate(run.parameters["request"])
    assert request.ticket is not None
    token = next(iter(links(sandbox).values())).rsplit("/", 1)[1]
    expires = LinkClaims.model_validate(load_approval_keys().open(token)).expires

    description = form(run, "description")
    assert isinstance(description, str)
    title = HOSTILE.replace("`", "'")
    for action in request.actions:
        assert f"- `{action.describe()}`" in description
    assert f"- Alert: `graph` `{alert['id']}`, severity `{request.severity}`" in description
    assert f"- Title: `{title}`" in description
    assert f"`{request.ticket.key}` [open]({request.ticket.url})" in description
    assert f"`{ALICE}` (`{SLACK}`), `{BOB}` (`{TEAMS}`)" in description
    assert f"Deadline: {expires:%Y-%m-%d %H:%M:%S} UTC" in description
    assert "policy's default outcome applies: **reject**" in description
    assert "Leave `proof` empty" in description
    # Rendered, the title is text in a code span: no link, image, tag or emphasis of its own.
    html = rendered(description)
    assert re.findall(r'href="([^"]+)"', html) == [request.ticket.url.replace("&", "&amp;")]
    assert "<img" not in html and "<strong>now</strong>" not in html
    as_text = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f"<code>{as_text}</code>" in html
    # The form's proof field says who fills it in.
    schema = form(run, "schema")
    proof = schema["properties"]["proof"]["description"]
    assert "approval links only" in proof and "leave it empty" in proof

    # Before the decision: the response's report links the containment run.
    (report,) = [a for a in artifacts_of(response.id) if (a.key or "").startswith("response-")]
    assert f"[open the containment run]({page_of(run)})" in str(report.data)
    assert not [a for a in artifacts_of(response.id) if "outcome" in (a.key or "")]

    # Rejected from the form, as the UI posts it.
    answer = httpx.post(
        f"{PREFECT_API_URL}/flow_runs/{run.id}/resume",
        json={"run_input": {"decision": "reject", "reason": "pentest", "approver": "dave"}},
        timeout=30,
    )
    assert answer.status_code in (200, 201) and answer.json()["status"] == "ACCEPT", answer.text
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    wait_for_log(run.id, "Resumed: rejected by dave (identity not proven) in the Prefect UI form")
    assert indicators(sandbox) == []

    table = audit_table(run)
    assert key_of(alert).fullmatch(table.key or ""), table.key
    outcome = outcome_on(response)
    assert key_of(alert, "containment-outcome").fullmatch(outcome.key or ""), outcome.key
    for shown in (table.description or "", outcome.description or ""):
        # The title, as text, cut to keep the description short.
        assert f"alert `{alert['id']}`" in shown and f"Alert: `{title[:147]}...`" in shown, shown
        assert "<img" not in rendered(shown) and "href" not in rendered(shown)
    assert "rejected, nothing executed" in (outcome.description or "")
    text = str(outcome.data)
    assert text.startswith(f"# Containment of `graph` alert `{alert['id']}`: rejected, nothing")
    assert "`rejected by dave (identity not proven) in the Prefect UI form: pentest`" in text
    page = rendered(text)
    assert re.findall(r'href="([^"]+)"', page) == [page_of(run)]
    assert "<img" not in page


EVIL_URL = "https://evil.example/login?next=http://evil.example/p.png"


def test_the_run_logs_show_an_alert_s_url_defanged_and_our_links_as_links(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    """The Prefect UI makes every URL of a log row a link (and colours ANSI escapes): a URL
    to block, from the alert, is logged defanged; the containment run's page stays a link."""
    use_policy(
        approval_policy().replace(
            "rules:\n",
            "rules:\n"
            "  - name: block-link\n"
            "    match: {title_pattern: Phishing link clicked}\n"
            "    playbook: escalate\n"
            "    containment: {actions: [block_url]}\n",
        )
    )
    alert = fresh(1, title="Phishing link clicked \x1b[31mred")
    alert["evidence"].append(
        {
            "@odata.type": "#microsoft.graph.security.urlEvidence",
            "createdDateTime": alert["createdDateTime"],
            "verdict": "malicious",
            "remediationStatus": "none",
            "roles": [],
            "tags": [],
            "url": EVIL_URL,
        }
    )
    response = respond(sandbox, intake_url, alert)
    run = contain_run(alert, state="paused")
    request = ContainmentRequest.model_validate(run.parameters["request"])
    assert [a.target for a in request.actions] == [EVIL_URL]
    answer = httpx.post(
        f"{PREFECT_API_URL}/flow_runs/{run.id}/resume",
        json={
            "run_input": {
                "decision": "reject",
                "reason": "see ftp://evil.example/why \x1b[5m",
                "approver": "dave",
            }
        },
        timeout=30,
    )
    assert answer.status_code in (200, 201) and answer.json()["status"] == "ACCEPT", answer.text
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state

    defanged = EVIL_URL.replace("://", "[:]//")
    lines = wait_for_log(run.id, "Resumed: rejected by dave")
    (waiting,) = [m for m in lines if m.startswith("Waiting up to")]
    assert f"Block URL {defanged}" in waiting, waiting
    (resumed,) = [m for m in lines if m.startswith("Resumed:")]
    assert "see ftp[:]//evil.example/why [5m" in resumed, resumed
    responded = wait_for_log(response.id, "containment: ")
    # The containment run's page, ours, is still a link in the response run's log.
    assert any(m.endswith(f": run {page_of(run)}") for m in responded), responded
    for line in lines + responded:
        assert not re.search(r"(?:https?|ftp)://\S*evil", line), line
        assert "\x1b" not in line, line


@pytest.mark.usefixtures("containment_policy")
def test_a_failing_action_fails_the_run_and_the_ticket_and_alert_say_so(
    sandbox: httpx.Client, intake_url: str, device_alert: dict[str, Any]
) -> None:
    sandbox.post(
        "/_sandbox/mde/machineactions/failures",
        json={"status": "Failed", "machine_id": machine_of(device_alert), "times": None},
    ).raise_for_status()
    response = respond(sandbox, intake_url, device_alert)
    contain_run(device_alert, state="paused")
    taken = httpx.post(links(sandbox)[(ALICE, "approve")], timeout=30)
    assert taken.status_code == 200, taken.text
    done = contain_run(device_alert, state="final", timeout=180)
    assert done.state is not None and done.state.is_failed(), done.state
    message = done.state.message or ""
    assert "FAILED" in message and "Isolate device" in message and "Failed" in message
    assert any("FAILED" in c for c in alert_comments(sandbox, device_alert["id"]))
    assert any("FAILED" in n for n in ticket_notes(sandbox))
    # The response run that asked shows it failed, and why.
    outcome = outcome_on(response)
    assert "approved, FAILED (1 of 1 actions)" in (outcome.description or "")
    assert "FAILED: containment action failed: Isolate device" in str(outcome.data)


@pytest.mark.usefixtures("containment_policy")
def test_automatic_containment_runs_without_asking(sandbox: httpx.Client, intake_url: str) -> None:
    alert = fresh(1, title="AUTOMATIC block: API Endpoint access from suspicious IP")
    response = respond(sandbox, intake_url, alert)
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    assert "automatically (the policy says so)" in (done.state.message or "")
    assert len(indicators(sandbox)) == 1
    assert links(sandbox) == {}
    outcome = outcome_on(response)
    assert "contained without approval (policy says automatic), done" in (outcome.description or "")
    # Never suspended: nothing to resume.
    assert not any("Resumed" in m or "Suspending" in m for m in log_lines(done.id))


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_an_approver_reached_by_email_gets_links_of_their_own(
    sandbox: httpx.Client, intake_url: str, use_policy: Callable[[str], None]
) -> None:
    from riposte.blocks import EmailSmtp
    from tests.test_email import Mailbox, smtp_server

    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        EmailSmtp(
            host="127.0.0.1",
            port=port,
            starttls=False,
            from_address="Riposte <riposte@example.com>",
            to_addresses=["soc@example.com"],
            timeout_seconds=5,
        ).save("riposte-test-approvals", overwrite=True)
        use_policy(
            approval_policy().replace(
                f"      - {{name: {BOB}, channels: [{TEAMS}]}}",
                f"      - {{name: {BOB}, channels: [email-smtp/riposte-test-approvals]}}",
            )
        )
        alert = fresh(1)
        respond(sandbox, intake_url, alert)
        contain_run(alert, state="paused")
        wait_until(lambda: mailbox.messages, timeout=30, what="the approval email")

    ((envelope, mail),) = mailbox.messages
    assert envelope.rcpt_tos == [BOB]  # the approver's own address, not the block's list
    assert "Approval needed" in str(mail["Subject"])
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in mail.walk()}
    text = bytes(parts["text/plain"]).decode()
    keys = load_approval_keys()
    claims = [LinkClaims.model_validate(keys.open(m.group(1))) for m in LINK.finditer(text)]
    assert {(c.approver, c.decision) for c in claims} == {(BOB, "approve"), (BOB, "reject")}
    approve = next(m.group(0) for m in LINK.finditer(text) if "approve" in _claims_of(m.group(1)))
    assert httpx.post(approve, data={"reason": "by mail"}, timeout=30).status_code == 200
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    assert "approved by bob@contoso.com by signed link: by mail" in (done.state.message or "")


def _claims_of(token: str) -> str:
    return str(load_approval_keys().open(token).get("decision"))


def test_the_approval_keys_are_nowhere_in_what_the_prefect_api_answers(
    sandbox: httpx.Client, intake_url: str, containment_policy: Callable[[str], None]
) -> None:
    """The review read the signing key from `POST /api/block_documents/filter` with
    `include_secrets`; it now lives only in the intake's and the workers' key file."""
    from tests.conftest import PREFECT_API_URL

    alert = fresh(1)
    respond(sandbox, intake_url, alert)
    contain_run(alert, state="paused")  # links were signed: the key is in use
    secret = Path(os.environ["RIPOSTE_APPROVAL_KEY_FILE"]).read_text().strip()
    assert len(secret) >= 32
    answers = [
        httpx.post(
            f"{PREFECT_API_URL}/block_documents/filter",
            json={"include_secrets": True, "limit": 200},
            timeout=30,
        ),
        httpx.post(f"{PREFECT_API_URL}/variables/filter", json={"limit": 200}, timeout=30),
        httpx.post(f"{PREFECT_API_URL}/deployments/filter", json={"limit": 200}, timeout=30),
        httpx.post(f"{PREFECT_API_URL}/work_pools/filter", json={}, timeout=30),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text
    assert "riposte-approval-key" not in answers[0].text
