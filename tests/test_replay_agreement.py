"""The simulated replay says what the live stack does: the same burst through `riposte replay`
and through the intake and the responder (real Prefect server, real HTTP to the sandbox) gives
the same tickets, notes, messages and digest entries, grouped the same way."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from riposte.alerts.sources import parse_alert
from riposte.deployments.cli import main
from riposte.sandbox.samples import sample_graph_alerts
from riposte.tasks.digests import read_entries
from tests.test_policy_e2e import SLACK, load, push, wait_completed

POLICY = f"""\
version: 1
defaults:
  ticket: {{system: servicenow, queue: Security Operations}}
  channels: [{SLACK}]
  digest: {{channel: {SLACK}, period: 1h}}
rules:
  - name: quiet-ones
    match: {{title_pattern: '^low '}}
    playbook: digest
  - name: by-incident
    match: {{title_pattern: '^incident '}}
    playbook: ticket_and_notify
    group_by_incident: true
  - name: by-ip
    match: {{title_pattern: '^ip '}}
    playbook: ticket_and_notify
    throttle: {{key: [entity:ip], max_tickets: 2, window: 1h}}
"""


def burst(tag: str, created: datetime) -> list[dict[str, Any]]:
    """20 alerts: 3 IPs x 4 (throttled, 2 tickets per IP), 2 incidents x 2, 4 to the digest."""
    template = sample_graph_alerts(created)[1]
    alerts = []

    def make(kind: str, n: int, ip: str, incident: str) -> dict[str, Any]:
        alert = copy.deepcopy(template)
        alert_id = f"agree-{tag}-{kind}-{n:02d}"
        alert.update(
            id=alert_id,
            providerAlertId=alert_id,
            title=f"{kind} {n} on GET /orders/{{orderId}}",
            incidentId=incident,
            createdDateTime=(created + timedelta(seconds=n)).isoformat(),
        )
        for evidence in alert["evidence"]:
            if "ipAddress" in evidence:
                evidence["ipAddress"] = ip
        alert["additionalData"]["Source IP"] = ip
        return alert

    for n in range(12):
        alerts.append(make("ip", n, f"198.51.100.{10 + n % 3}", f"91{tag[:4]}{n}"))
    for n in range(4):
        alerts.append(make("incident", n, "203.0.113.77", f"92{n % 2}"))
    for n in range(4):
        alerts.append(make("low", n, "203.0.113.78", f"93{n}"))
    return alerts


def _ticket_of(alert: dict[str, Any]) -> str | None:
    for comment in alert.get("comments") or []:
        found = re.search(r"INC\d{7}", json.dumps(comment))
        if found:
            return found.group()
    return None


@pytest.mark.usefixtures("served_flows")
def test_simulated_replay_matches_the_live_stack(
    sandbox: httpx.Client,
    intake_url: str,
    use_policy: Callable[[str], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_policy(POLICY)
    tag = datetime.now(UTC).strftime("%H%M%S")
    # Inside one hour-long window, clear of its edge, so both sides see the same slots.
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0)
    created = max(start + timedelta(seconds=30), now - timedelta(minutes=50))
    if created + timedelta(seconds=60) > start + timedelta(hours=1):  # pragma: no cover
        created = start + timedelta(seconds=30)
    alerts = burst(tag, created)
    ids = {a["id"] for a in alerts}

    # --- the simulated replay, from a file -----------------------------------------------------
    alert_file = tmp_path / "burst.json"
    alert_file.write_text(json.dumps({"value": alerts}))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    assert main(["replay", str(alert_file), "--policy", str(policy_file), "--json"]) == 0
    simulated = json.loads(capsys.readouterr().out)["report"]

    # --- the live stack: intake, responder, sandbox --------------------------------------------
    # In waves: each wave holds at most one alert of each group, in the replay's time order. A
    # replay answers alerts one after another; live, alerts of one group decided at the same
    # instant share a ticket (fewer tickets than the replay says, never more: the README says
    # so), which is not what this test compares.
    load(sandbox, alerts)
    waves: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for alert in alerts:
        kind, number = alert["id"].rsplit("-", 2)[-2:]
        waves[int(number) // {"ip": 3, "incident": 2, "low": 4}[kind]].append(alert)
    for wave in sorted(waves):
        wait_completed(push(intake_url, waves[wave]), timeout=300)
    held = {a["id"]: a for a in sandbox.get("/_sandbox/graph/alerts").json() if a["id"] in ids}
    live_ticket = {alert_id: _ticket_of(alert) for alert_id, alert in held.items()}
    tickets = sandbox.get("/_sandbox/servicenow/incidents").json()
    slack = sandbox.get("/_sandbox/slack/messages").json()
    entries = [e for e in read_entries(created - timedelta(hours=1)) if e.alert.id in ids]

    # Counts.
    totals = simulated["totals"]
    assert totals["alerts"] == len(alerts)
    assert totals["tickets"] == len(tickets) == 2 * 3 + 2
    assert totals["messages"] == len(slack) == totals["tickets"]
    assert totals["digest_entries"] == len({e.alert.id for e in entries}) == 4
    answered = [a for a in live_ticket.values() if a is not None]
    assert totals["tickets"] + totals["notes"] == len(answered) == 16

    # Grouping: per group (IP or incident), how many tickets and how many alerts on each.
    def group(alert_id: str) -> str:
        payload = next(a for a in alerts if a["id"] == alert_id)
        alert = parse_alert(payload, "graph")
        if alert.title.startswith("incident "):
            return f"incident {alert.incident_id}"
        return f"ip {payload['additionalData']['Source IP']}"

    def shape(ticket_of: dict[str, str | None]) -> dict[str, list[int]]:
        per_ticket: dict[str, list[str]] = defaultdict(list)
        for alert_id, key in ticket_of.items():
            if key is not None:
                per_ticket[key].append(alert_id)
        groups: dict[str, list[int]] = defaultdict(list)
        for members in per_ticket.values():
            owners = {group(m) for m in members}
            assert len(owners) == 1, f"a ticket holds alerts of several groups: {members}"
            groups[owners.pop()].append(len(members))
        return {g: sorted(sizes) for g, sizes in groups.items()}

    simulated_ticket: dict[str, str | None] = {}
    for row in simulated["alerts"]:
        alert_id = row["alert"].removeprefix("graph-")
        keys = row["tickets_opened"] + row["ticket_notes"]
        simulated_ticket[alert_id] = keys[0] if keys else None
    assert shape(simulated_ticket) == shape(live_ticket)
    assert shape(live_ticket) == {
        **{f"ip 198.51.100.{10 + i}": [1, 3] for i in range(3)},
        "incident 920": [2],
        "incident 921": [2],
    }
    # The digest: the same alerts, in the same bucket.
    digested = {row["alert"].removeprefix("graph-"): row["digest"] for row in simulated["alerts"]
                if row["digest"]}  # fmt: skip
    assert {e.alert.id: e.bucket.key for e in entries} == {k: v[0] for k, v in digested.items()}
    per_channel = Counter(simulated["messages_per_channel"])
    assert per_channel == Counter({SLACK: len(slack)})
