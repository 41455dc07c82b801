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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterName,
)
from prefect.client.schemas.objects import FlowRun

from riposte.alerts.approval import ApprovalKeys, LinkClaims
from riposte.blocks.approval import load_approval_keys
from riposte.sandbox.samples import sample_graph_alerts
from tests.conftest import wait_until
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


def respond(sandbox: httpx.Client, intake_url: str, alert: dict[str, Any]) -> None:
    load(sandbox, [alert])
    wait_completed(push(intake_url, [alert]))


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
    respond(sandbox, intake_url, device_alert)
    run = contain_run(device_alert, state="paused")
    found = links(sandbox)
    assert set(found) == {(ALICE, "approve"), (ALICE, "reject"), (BOB, "approve"), (BOB, "reject")}
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


def test_timeout_applies_the_default_outcome_and_expired_links_say_so(
    sandbox: httpx.Client, intake_url: str, containment_policy: Callable[[str], None]
) -> None:
    from riposte.flows.contain import expire_approvals

    containment_policy("3s")
    alert = fresh(1)
    respond(sandbox, intake_url, alert)
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

    swept = asyncio.run(expire_approvals())  # what the scheduled sweep does
    assert str(run.id) in swept
    done = contain_run(alert, state="final")
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


@pytest.mark.usefixtures("containment_policy")
def test_a_failing_action_fails_the_run_and_the_ticket_and_alert_say_so(
    sandbox: httpx.Client, intake_url: str, device_alert: dict[str, Any]
) -> None:
    sandbox.post(
        "/_sandbox/mde/machineactions/failures",
        json={"status": "Failed", "machine_id": machine_of(device_alert), "times": None},
    ).raise_for_status()
    respond(sandbox, intake_url, device_alert)
    contain_run(device_alert, state="paused")
    taken = httpx.post(links(sandbox)[(ALICE, "approve")], timeout=30)
    assert taken.status_code == 200, taken.text
    done = contain_run(device_alert, state="final", timeout=180)
    assert done.state is not None and done.state.is_failed(), done.state
    message = done.state.message or ""
    assert "FAILED" in message and "Isolate device" in message and "Failed" in message
    assert any("FAILED" in c for c in alert_comments(sandbox, device_alert["id"]))
    assert any("FAILED" in n for n in ticket_notes(sandbox))


@pytest.mark.usefixtures("containment_policy")
def test_automatic_containment_runs_without_asking(sandbox: httpx.Client, intake_url: str) -> None:
    alert = fresh(1, title="AUTOMATIC block: API Endpoint access from suspicious IP")
    respond(sandbox, intake_url, alert)
    done = contain_run(alert, state="final")
    assert done.state is not None and done.state.is_completed(), done.state
    assert "automatically (the policy says so)" in (done.state.message or "")
    assert len(indicators(sandbox)) == 1
    assert links(sandbox) == {}


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
