"""No over-response: throttles, incident grouping, suppression windows, digests, and a burst."""

from __future__ import annotations

import textwrap
from collections import Counter
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from riposte.alerts.matching import PlannedAction, evaluate
from riposte.alerts.model import Alert, Severity
from riposte.alerts.policy import Policy, default_policy, parse_policy
from riposte.alerts.throttle import (
    DigestCollector,
    Disposition,
    InMemoryLedger,
    Outcome,
    gate,
    plan,
    slot_start,
)
from tests.alert_factory import T0, api_alert, entity, make_alert


def policy(rules: str) -> Policy:
    return parse_policy(
        "defaults:\n"
        "  ticket: {system: servicenow, queue: SOC}\n"
        "  channels: [slack-incoming-webhook/riposte-slack]\n"
        "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    )


def run(pol: Policy, alerts: list[Alert], ledger: InMemoryLedger | None = None) -> list[Outcome]:
    """Decide and record each alert in turn, as the flows would, at the alert's creation time."""
    ledger = ledger or InMemoryLedger()
    outcomes = []
    for alert in alerts:
        for outcome in plan(
            evaluate(pol, alert), alert, at=alert.created_at, tickets=ledger, suppressions=ledger
        ):
            ledger.record(outcome)
            outcomes.append(outcome)
    return outcomes


THROTTLED = policy(
    """
    - name: api
      match: {alert_type: "API_*"}
      playbook: ticket_and_notify
      throttle: {key: [entity:api_endpoint, entity:ip], max_tickets: 2, window: 1h}
    """
)


def test_throttle_opens_at_most_max_tickets_then_comments_with_a_count() -> None:
    alerts = [api_alert(f"a{i}", "API_SpikeInAPITraffic", minutes=i) for i in range(6)]
    outcomes = run(THROTTLED, alerts)
    assert [o.disposition for o in outcomes] == [Disposition.TICKET] * 2 + [Disposition.COMMENT] * 4
    assert outcomes[0].notify == ("slack-incoming-webhook/riposte-slack",)
    assert all(o.notify == () for o in outcomes[2:])
    # Comments go to the latest ticket of the group and count the alerts it holds.
    assert {o.ticket.correlation_key for o in outcomes[2:] if o.ticket} == {
        outcomes[1].ticket_correlation_key
    }
    assert [o.alert_number for o in outcomes[2:]] == [2, 3, 4, 5]
    assert "throttled: 2 ticket(s) already opened" in outcomes[2].reason


def test_throttle_counts_separately_per_key_value() -> None:
    alerts = [
        api_alert("a1", "API_X"),
        api_alert("a2", "API_X", ip="198.51.100.1"),
        api_alert("a3", "API_X", endpoint="apim/other/op"),
    ]
    outcomes = run(THROTTLED, alerts)
    assert [o.disposition for o in outcomes] == [Disposition.TICKET] * 3
    assert len({o.group_key for o in outcomes}) == 3


def test_throttle_key_ignores_entity_order_and_case() -> None:
    pol = policy(
        """
        - name: acct
          match: {}
          playbook: ticket_and_notify
          throttle: {key: entity:account, window: 1d}
        """
    )
    first = make_alert("1", entities=(entity("account", "Bob@x.com"), entity("account", "a@x.com")))
    second = make_alert(
        "2", entities=(entity("account", "A@x.com"), entity("account", "bob@x.com"))
    )
    outcomes = run(pol, [first, second])
    assert [o.disposition for o in outcomes] == [Disposition.TICKET, Disposition.COMMENT]


def test_a_new_window_opens_a_new_ticket() -> None:
    pol = policy(
        """
        - name: api
          match: {}
          playbook: ticket_and_notify
          throttle: {key: alert_type, window: 1h}
        """
    )
    start = slot_start(T0, timedelta(hours=1))
    early = make_alert("1", alert_type="X", at=start + timedelta(minutes=5))
    same = make_alert("2", alert_type="X", at=start + timedelta(minutes=59))
    later = make_alert("3", alert_type="X", at=start + timedelta(minutes=61))
    outcomes = run(pol, [early, same, later])
    assert [o.disposition for o in outcomes] == [
        Disposition.TICKET,
        Disposition.COMMENT,
        Disposition.TICKET,
    ]
    assert outcomes[0].ticket_correlation_key != outcomes[2].ticket_correlation_key


def test_two_workers_deciding_at_once_find_or_create_the_same_ticket_key() -> None:
    # Neither worker sees the other's ticket yet: both decide TICKET, on the same key, so the
    # ticketing system's find-or-create gives them one ticket.
    action = evaluate(THROTTLED, api_alert("a1", "API_X")).final
    ledger = InMemoryLedger()
    one = gate(action, api_alert("a1", "API_X"), at=T0, tickets=ledger, suppressions=ledger)
    two = gate(action, api_alert("a2", "API_X"), at=T0, tickets=ledger, suppressions=ledger)
    assert one.disposition == two.disposition == Disposition.TICKET
    assert one.ticket_correlation_key == two.ticket_correlation_key
    ledger.record(one)
    ledger.record(two)
    assert len(ledger.tickets) == 1


def test_a_retried_decision_lands_on_the_same_keys() -> None:
    alert = api_alert("a1", "API_X")
    action = evaluate(THROTTLED, alert).final
    first = gate(
        action, alert, at=alert.created_at, tickets=InMemoryLedger(), suppressions=InMemoryLedger()
    )
    again = gate(
        action, alert, at=alert.created_at, tickets=InMemoryLedger(), suppressions=InMemoryLedger()
    )
    assert first == again
    assert first.ticket_correlation_key is not None
    assert first.ticket_correlation_key.startswith("riposte-t-api-")
    assert all(c.isalnum() or c == "-" for c in first.ticket_correlation_key)


class _LostTickets(InMemoryLedger):
    """A ledger that counts tickets but cannot show them (a lookup that failed)."""

    def open_ticket_for(self, key: str) -> None:
        return None


def test_a_throttled_alert_with_no_ticket_to_comment_on_still_gets_one() -> None:
    ledger = _LostTickets()
    outcomes = run(THROTTLED, [api_alert(f"a{i}", "API_X") for i in range(3)], ledger)
    last = outcomes[-1]
    assert last.disposition == Disposition.TICKET
    assert last.ticket_correlation_key == outcomes[1].ticket_correlation_key
    assert "no ticket was found" in last.reason


def test_alerts_of_one_incident_share_one_ticket() -> None:
    pol = policy(
        """
        - name: mde
          match: {}
          playbook: escalate
          group_by_incident: true
          throttle: {key: alert_type, max_tickets: 5, window: 1h}
        """
    )
    alerts = [
        make_alert("1", incident_id="31547", alert_type="A"),
        make_alert("2", incident_id="31547", alert_type="B"),
        make_alert("3", incident_id="99", alert_type="A"),
        make_alert("4", incident_id=None, alert_type="A"),
        make_alert("5", incident_id="31547", alert_type="C"),
    ]
    outcomes = run(pol, alerts)
    assert [o.disposition for o in outcomes] == [
        Disposition.TICKET,
        Disposition.COMMENT,
        Disposition.TICKET,
        Disposition.TICKET,
        Disposition.COMMENT,
    ]
    assert outcomes[0].ticket_correlation_key == "riposte-incident-graph-31547"
    assert outcomes[4].ticket is not None
    assert outcomes[4].ticket.correlation_key == "riposte-incident-graph-31547"
    assert outcomes[4].alert_number == 3
    # Without an incident the throttle decides.
    assert outcomes[3].group_key is not None and outcomes[3].group_key.startswith("riposte-t-")


def test_suppression_window_drops_repeats_until_it_expires() -> None:
    pol = policy(
        """
        - name: logins
          match: {}
          playbook: ticket_and_notify
          suppress: {key: entity:account, window: 4h}
        """
    )
    bob = (entity("account", "bob@contoso.com"),)
    alerts = [
        make_alert("1", entities=bob, at=T0),
        make_alert("2", entities=bob, at=T0 + timedelta(hours=1)),
        make_alert("3", entities=(entity("account", "eve@contoso.com"),), at=T0),
        make_alert("4", entities=bob, at=T0 + timedelta(hours=4, minutes=1)),
    ]
    outcomes = run(pol, alerts)
    assert [o.disposition for o in outcomes] == [
        Disposition.TICKET,
        Disposition.SUPPRESSED,
        Disposition.TICKET,
        Disposition.TICKET,
    ]
    assert "within the 4h suppression window" in outcomes[1].reason


def test_allowlisted_and_ignored_alerts_are_accounted_for_without_side_effects() -> None:
    pol = policy(
        """
        - name: ign
          match: {severity: low}
          playbook: ignore
        - name: scan
          match: {}
          playbook: ticket_and_notify
          allow: {ip_cidrs: [192.0.2.0/28]}
        """
    )
    outcomes = run(
        pol,
        [
            make_alert("1", severity=Severity.LOW),
            make_alert("2", entities=(entity("ip", "192.0.2.4"),)),
            make_alert("3", entities=(entity("ip", "192.0.2.99"),)),
        ],
    )
    assert [o.disposition for o in outcomes] == [
        Disposition.IGNORED,
        Disposition.SUPPRESSED,
        Disposition.TICKET,
    ]
    assert all(o.notify == () for o in outcomes[:2])
    assert "192.0.2.4" in outcomes[1].reason


def test_close_benign_gives_a_close_outcome() -> None:
    pol = policy(
        """
        - name: tests
          match: {title_pattern: test}
          playbook: close_benign
          close: {reason: test alert}
        """
    )
    (outcome,) = run(pol, [make_alert(title="a test alert")])
    assert outcome.disposition == Disposition.CLOSE and outcome.notify == ()


def test_digest_collects_alerts_per_channel_per_period_and_posts_each_bucket_once() -> None:
    pol = policy(
        """
        - name: lat
          match: {alert_type: API_SpikeInLatency}
          playbook: digest
          digest: {channel: slack-incoming-webhook/a, period: 1h}
        - name: low
          match: {}
          playbook: digest
          digest: {channel: teams-workflow-webhook/b, period: 1h}
        """
    )
    hour = slot_start(T0, timedelta(hours=1))
    alerts = [
        make_alert("1", alert_type="API_SpikeInLatency", at=hour + timedelta(minutes=1)),
        make_alert("2", alert_type="API_SpikeInLatency", at=hour + timedelta(minutes=50)),
        make_alert("3", alert_type="API_SpikeInLatency", at=hour + timedelta(minutes=70)),
        make_alert("4", at=hour + timedelta(minutes=2)),
    ]
    collector = DigestCollector()
    for alert, outcome in zip(alerts, run(pol, alerts), strict=True):
        assert outcome.disposition == Disposition.DIGEST
        collector.add(outcome, alert)
        collector.add(outcome, alert)  # a retried run adds nothing twice

    assert collector.due(hour + timedelta(minutes=59)) == []
    due = collector.due(hour + timedelta(hours=1))
    assert [(b.channel, [a.id for a in held]) for b, held in due] == [
        ("slack-incoming-webhook/a", ["1", "2"]),
        ("teams-workflow-webhook/b", ["4"]),
    ]
    for bucket, _ in due:
        collector.mark_posted(bucket)
    later = collector.due(hour + timedelta(hours=3))
    assert [(b.start, [a.id for a in held]) for b, held in later] == [
        (hour + timedelta(hours=1), ["3"])
    ]
    assert due[0][0].key.startswith("riposte-digest-")


def test_burst_of_200_alerts_about_one_api_endpoint_and_ip_opens_a_few_tickets() -> None:
    """The README's promise: with the default policy, 200 alerts about the same endpoint and IP
    over 40 minutes open at most a few tickets and messages, and every alert is accounted for."""
    types = [
        "API_AccessFromSuspiciousIP",
        "API_AccessFromTorExitNode",
        "API_ParameterEnumeration",
        "API_DistributedParameterEnumeration",
        "API_SpikeInLatency",
        "API_SpikeInAPITraffic",
        "API_SpikeInPayload",
        "API_UnseenParam",
    ]
    alerts = [api_alert(f"burst-{i}", types[i % len(types)], minutes=i * 0.2) for i in range(200)]
    pol = default_policy()
    ledger = InMemoryLedger()
    collector = DigestCollector()
    accounted: dict[str, Disposition] = {}
    messages = 0
    for alert in alerts:
        (outcome,) = plan(
            evaluate(pol, alert), alert, at=alert.created_at, tickets=ledger, suppressions=ledger
        )
        ledger.record(outcome)
        accounted[alert.id] = outcome.disposition
        messages += len(outcome.notify)
        if outcome.disposition == Disposition.DIGEST:
            collector.add(outcome, alert)
    digests = collector.due(alerts[-1].created_at + timedelta(hours=2))
    messages += len(digests)

    counts = Counter(accounted.values())
    assert len(accounted) == 200
    assert sum(counts.values()) == 200
    assert set(counts) <= {Disposition.TICKET, Disposition.COMMENT, Disposition.DIGEST}
    assert counts[Disposition.TICKET] == len(ledger.tickets) <= 3
    assert counts[Disposition.DIGEST] == 25 == sum(len(held) for _, held in digests)
    assert counts[Disposition.COMMENT] == 200 - 25 - counts[Disposition.TICKET]
    # One escalation pages two channels, two tickets post one message each, one digest.
    assert messages <= 5
    # Comments carry a running count, so the ticket shows how big the burst was.
    assert max(t.alerts for t in ledger.tickets) > 50


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.integers(0, 600)),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 3),
)
def test_no_key_gets_more_than_max_tickets_per_window_and_no_alert_is_lost(
    events: list[tuple[str, int]], max_tickets: int
) -> None:
    pol = policy(
        f"""
        - name: t
          match: {{}}
          playbook: ticket_and_notify
          throttle: {{key: entity:ip, max_tickets: {max_tickets}, window: 1h}}
        """
    )
    alerts = [
        make_alert(f"a{i}", entities=(entity("ip", ip),), at=T0 + timedelta(minutes=minute))
        for i, (ip, minute) in enumerate(sorted(events, key=lambda e: e[1]))
    ]
    outcomes = run(pol, alerts)
    assert len(outcomes) == len(alerts)
    assert {o.disposition for o in outcomes} <= {Disposition.TICKET, Disposition.COMMENT}
    per_window = Counter(
        (o.group_key, slot_start(o.at, timedelta(hours=1)))
        for o in outcomes
        if o.disposition == Disposition.TICKET
    )
    assert max(per_window.values()) <= max_tickets


def test_planned_action_describes_throttling_in_its_steps() -> None:
    action: PlannedAction = evaluate(THROTTLED, api_alert("1", "API_X")).final
    assert any(
        "at most 2 ticket(s) per entity:api_endpoint+entity:ip per 1h" in s for s in action.steps()
    )
