"""Ticket groups and notes in the ticketing clients, against the sandbox over real HTTP: what the
throttle and incident ledgers read, and where a policy's queue or project sends a ticket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from riposte.alerts.matching import evaluate
from riposte.alerts.model import Severity
from riposte.alerts.policy import Close, Playbook, default_policy
from riposte.alerts.response import Priority, TicketDraft
from riposte.blocks.jira import adf_text
from riposte.blocks.ticketing import in_group
from riposte.deployments.local import sandbox_blocks
from riposte.flows.playbooks import manual_action
from riposte.sandbox.config import SandboxConfig
from riposte.tasks.ledgers import TicketLedger, record_response_time, slot_of
from tests.alert_factory import api_alert, make_alert

GROUP = "riposte-t-apis-other-0123456789abcdef"


@pytest.fixture
def blocks(sandbox: httpx.Client, sandbox_url: str, sandbox_config: SandboxConfig) -> Any:
    return sandbox_blocks(sandbox_url, sandbox_config)


def draft(key: str, **fields: Any) -> TicketDraft:
    return TicketDraft(
        correlation_key=key,
        summary="[Defender] API_SpikeInAPITraffic",
        description="Alert text.",
        priority=Priority.MEDIUM,
        source_label="Microsoft Defender (graph)",
        **fields,
    )


def test_group_membership_is_the_key_itself_or_a_slot_ticket_under_it() -> None:
    assert in_group(GROUP, GROUP)
    assert in_group(f"{GROUP}-20240612060000-2", GROUP)
    assert not in_group(f"{GROUP}0-20240612060000-2", GROUP)
    assert not in_group(f"{GROUP}-other-20240612060000-2", GROUP)
    assert not in_group("riposte-incident-graph-12", "riposte-incident-graph-1")
    assert slot_of(f"{GROUP}-20240612060000-2", GROUP) == (
        datetime(2024, 6, 12, 6, tzinfo=UTC),
        2,
    )
    assert slot_of("riposte-incident-graph-1", "riposte-incident-graph-1") is None


def test_servicenow_group_lists_the_tickets_of_a_group_and_no_other(blocks: Any) -> None:
    client = blocks["riposte-servicenow"].get_client()
    for key in (
        f"{GROUP}-20240612000000-1",
        f"{GROUP}-20240612060000-1",
        f"{GROUP}-20240612060000-2",
        f"{GROUP}x-20240612060000-1",
        "riposte-graph-unrelated",
    ):
        client.create(draft(key))
    found = {g.correlation_key for g in client.group(GROUP)}
    assert found == {
        f"{GROUP}-20240612000000-1",
        f"{GROUP}-20240612060000-1",
        f"{GROUP}-20240612060000-2",
    }


def test_ticket_ledger_counts_the_window_s_tickets_and_returns_the_latest(blocks: Any) -> None:
    client = blocks["riposte-servicenow"].get_client()
    for key in (
        f"{GROUP}-20240612060000-1",
        f"{GROUP}-20240612060000-2",
        f"{GROUP}-20240612000000-1",  # an older window, created last
    ):
        client.create(draft(key))
    ledger = TicketLedger(client)
    assert ledger.count_since(GROUP, datetime(2024, 6, 12, 6, tzinfo=UTC)) == 2
    assert ledger.count_since(GROUP, datetime(2024, 6, 12, tzinfo=UTC)) == 3
    latest = ledger.open_ticket_for(GROUP)
    assert latest is not None and latest.correlation_key == f"{GROUP}-20240612060000-2"
    ticket = ledger.ticket(latest.correlation_key)
    assert ticket is not None and ticket.key == latest.key
    assert ledger.open_ticket_for("riposte-t-nothing-0123456789abcdef") is None


def test_servicenow_ticket_goes_to_the_policy_queue_and_its_notes_read_back(
    blocks: Any, sandbox: httpx.Client
) -> None:
    client = blocks["riposte-servicenow"].get_client()
    ticket = client.create(draft("riposte-graph-q1", queue="Security Operations"))
    other = client.create(draft("riposte-graph-q2"))
    client.add_note(ticket, "first note")
    client.add_note(other, "a note on another ticket")
    client.add_note(ticket, "second note\nwith two lines")
    assert client.notes(ticket) == ["first note", "second note\nwith two lines"]
    (record,) = [
        i["record"]
        for i in sandbox.get("/_sandbox/servicenow/incidents").json()
        if i["record"]["correlation_id"] == "riposte-graph-q1"
    ]
    assert record["assignment_group"] == "Security Operations"


def test_jira_issue_goes_to_the_policy_project_with_the_group_label(
    blocks: Any, sandbox: httpx.Client
) -> None:
    # The block names a project that does not exist: only the policy's project can work.
    jira = blocks["riposte-jira"].model_copy(update={"project_key": "NOPE"})
    client = jira.get_client()
    key = f"{GROUP}-20240612060000-1"
    ticket = client.find_or_create(draft(key, project="SEC", group_key=GROUP))
    # Jira's search lags behind its writes: the new issue's id makes it see it at once.
    recent = [ticket.id]
    assert client.find(key, project="SEC", recent=recent) == ticket.model_copy(
        update={"created": False}
    )
    (issue,) = sandbox.get("/_sandbox/jira/issues").json()
    assert set(issue["fields"]["labels"]) == {key, GROUP, "riposte"}
    (grouped,) = client.group(GROUP, project="SEC", recent=recent)
    assert grouped.correlation_key == key and grouped.ticket.key == ticket.key
    client.add_note(ticket, "Alert 2 on this ticket.\n\nRiposte alert key: riposte-graph-b")
    # Paragraphs read back a blank line apart, as written: the marker is the last paragraph.
    assert client.notes(ticket) == ["Alert 2 on this ticket.\n\nRiposte alert key: riposte-graph-b"]


def test_adf_text_keeps_paragraphs_and_list_items_on_their_own_lines() -> None:
    document = {
        "type": "doc",
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "one"}]},
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "a"}]}
                        ],
                    },
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "b"}]}
                        ],
                    },
                ],
            },
        ],
    }
    # The document's blocks a blank line apart, a list's items on lines of their own.
    assert adf_text(document).splitlines() == ["one", "", "a", "b"]


def test_response_times_of_a_suppression_key_never_move_back(prefect_server: str) -> None:
    key = f"riposte-s-test-{datetime.now(UTC):%H%M%S%f}"
    at = datetime(2024, 6, 12, 9, tzinfo=UTC)
    assert record_response_time(key, at) == at
    assert record_response_time(key, at - timedelta(minutes=5)) == at
    later = at + timedelta(minutes=5)
    assert record_response_time(key, later) == later


def test_a_playbook_run_by_hand_uses_the_rule_s_parameters_without_its_throttle() -> None:
    policy = default_policy()
    alert = api_alert("a-1", "API_AccessFromSuspiciousIP", severity=Severity.HIGH)
    assert evaluate(policy, alert).final.throttle is not None
    action = manual_action(policy, alert, Playbook.ESCALATE)
    assert action.rule == "apis-suspicious-source" and action.priority == Priority.CRITICAL
    assert action.throttle is None and not action.group_by_incident
    assert "teams-workflow-webhook/riposte-teams" in action.channels  # on call is paged


def test_a_playbook_the_policy_does_not_pick_takes_the_defaults() -> None:
    policy = default_policy()
    alert = make_alert("a-2", severity=Severity.LOW)
    action = manual_action(policy, alert, Playbook.ESCALATE)
    assert action.rule == "fallback" and action.priority == Priority.HIGH
    assert action.ticket is not None and action.ticket.queue == "Security Operations"
    close = Close(classification="false_positive", reason="Known scanner")
    closing = manual_action(policy, alert, Playbook.CLOSE_BENIGN, {"close": close.model_dump()})
    assert Close.model_validate(closing.params["close"]) == close
