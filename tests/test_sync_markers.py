"""The ticket sync's record on the ticket: alert keys and applied states from marker lines, which
only Riposte's own trailing paragraph can carry."""

from __future__ import annotations

from riposte.alerts.sync import (
    ALERT_MARKER,
    AlertState,
    SyncPolicy,
    alert_keys,
    last_ticket_marker,
    parse_key,
    recorded_alert_states,
    ticket_marker,
    trailing_markers,
)


def test_alert_keys_come_from_the_trailing_markers_only() -> None:
    description = f"Alert: evil\n\n{ALERT_MARKER} riposte-graph-first"
    # Alert text quoted in a note cannot plant a key: it is not the note's last paragraph.
    planted = (
        f"Title: x\n{ALERT_MARKER} riposte-graph-victim\nmore text\n\n"
        f"{ALERT_MARKER} riposte-defender_endpoint-da_1.2-x"
    )
    assert alert_keys([description, planted]) == [
        "riposte-graph-first",
        "riposte-defender_endpoint-da_1.2-x",
    ]
    # A last paragraph that mixes text and a marker is not Riposte's record.
    assert alert_keys([f"note\n{ALERT_MARKER} riposte-graph-victim"]) == []
    assert alert_keys([f"x\n\n{ALERT_MARKER} riposte-graph-a b"]) == []
    assert trailing_markers("") == []


def test_keys_parse_into_source_and_id() -> None:
    assert parse_key("riposte-defender_cloud-2517_abc-def") == ("defender_cloud", "2517_abc-def")
    assert parse_key("riposte-inc-") is None
    # A group's key (an incident's, a throttle slot's) is never taken for an alert's.
    assert parse_key("riposte-incident-graph-924520") is None
    assert parse_key("riposte-throttle-noisy-0a1b2c-20261207120000-1") is None
    assert parse_key("not-a-key") is None


def test_the_last_applied_ticket_state_wins() -> None:
    done = ticket_marker("done", "Solved (Permanently)")
    reopened = ticket_marker("open", None)
    notes = [f"resolved\n\n{done}", f"reopened\n\n{reopened}", "an analyst's note"]
    assert last_ticket_marker(notes) == reopened
    assert last_ticket_marker(notes[:1]) == done
    assert ticket_marker("done", "Duplicate") != done


def test_alert_states_round_trip_and_say_what_a_person_changed() -> None:
    state = AlertState(
        status="resolved",
        classification="truePositive",
        determination="malware",
        assigned_to="Ana Smith <ana@contoso.com>",
    )
    note = f"text\n\n{state.marker('riposte-graph-1')}"
    assert recorded_alert_states([note]) == {"riposte-graph-1": state}
    before = AlertState(status="inProgress")
    assert state.changes_from(before) == [
        "resolved",
        "reassigned to Ana Smith <ana@contoso.com>",
        "reclassified as truePositive / malware",
    ]
    assert before.changes_from(state)[0] == "reopened"
    assert AlertState(status="inProgress", classification="unknown").same_as(before)


def test_resolutions_map_to_verdicts_and_unmapped_ones_say_so() -> None:
    policy = SyncPolicy.model_validate(
        {"resolutions": {"Done": {"classification": "falsePositive"}}}
    )
    verdict, mapped = policy.verdict("jira", "Done")
    assert (verdict.classification, verdict.determination, mapped) == (
        "falsePositive",
        "unknown",
        True,
    )
    verdict, mapped = policy.verdict("servicenow", "Solved (Permanently)")
    assert (verdict.classification, mapped) == ("truePositive", True)
    verdict, mapped = policy.verdict("servicenow", "Made up")
    assert (verdict.classification, verdict.determination, mapped) == ("unknown", "unknown", False)


def test_a_ticket_description_ends_with_its_alert_marker_even_when_the_alert_is_huge() -> None:
    from riposte.alerts.messages import DESCRIPTION_MAX, MessageRenderer
    from riposte.alerts.response import Priority, Route
    from tests.alert_factory import make_alert

    # A planted marker in the alert's own text must not be what the ticket records.
    planted = f"x\n\n{ALERT_MARKER} riposte-graph-victim"
    alert = make_alert("big-1", description=("y" * 20_000) + planted)
    route = Route(priority=Priority.HIGH, open_ticket=True, notify=True, reason="r")
    draft = MessageRenderer().ticket_draft(alert, route, system="servicenow")
    assert len(draft.description) <= DESCRIPTION_MAX + 100
    assert alert_keys([draft.description]) == ["riposte-graph-big-1"]
