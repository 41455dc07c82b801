"""`riposte replay` and `riposte policy diff`, simulated: past alerts through a policy and its
playbooks in memory, nothing written anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from riposte.alerts.policy import parse_policy
from riposte.alerts.sources import parse_alert
from riposte.deployments.cli import main
from riposte.playbooks.replay import Threshold, simulate
from riposte.sandbox.history import history
from riposte.sandbox.samples import sample_graph_alerts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CANDIDATE = FIXTURES / "replay" / "candidate.yaml"
EXAMPLES = ROOT / "examples" / "playbooks"


@pytest.fixture(autouse=True)
def _default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIPOSTE_POLICY_FILE", raising=False)
    monkeypatch.delenv("RIPOSTE_TEMPLATES_DIR", raising=False)


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    out: Any = captured.out
    if "--json" in args and captured.out.strip():
        out = json.loads(captured.out)
    return code, out, captured.err


def by_alert(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["alert"]: t for t in report["alerts"]}


def test_replay_of_the_fixtures_of_all_four_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = replay(capsys, "replay", str(FIXTURES), "--json")
    assert code == 0, err
    report = out["report"]
    sources = Counter(t["alert"].split("-", 1)[0] for t in report["alerts"])
    assert set(sources) == {"graph", "defender_endpoint", "cloud_apps", "defender_cloud"}
    totals = report["totals"]
    assert totals["alerts"] == len(report["alerts"]) == sum(sources.values())
    # Every alert is accounted for exactly once per action, and the rule rows add up.
    assert sum(r["alerts"] for r in report["rules"]) == sum(
        len(t["rules"]) for t in report["alerts"]
    )
    assert sum(r["tickets"] for r in report["rules"]) == totals["tickets"]
    assert sum(report["messages_per_channel"].values()) == totals["messages"]
    alerts = by_alert(report)
    # The default policy's decisions, alert by alert, as `policy explain` gives them.
    sample = [t for t in alerts.values() if t["rules"] == ["cloud-sample-alerts"]]
    assert sample and all(t["closed"] and t["dispositions"] == ["close"] for t in sample)
    low = [t for t in alerts.values() if t["rules"] == ["endpoint-low"]]
    assert low and all(t["digest"] and not t["messages"] for t in low)
    escalated = [t for t in alerts.values() if t["playbooks"] == ["escalate"]]
    assert escalated
    assert all("teams-workflow-webhook/riposte-teams" in t["messages"] for t in escalated
               if t["tickets_opened"])  # fmt: skip
    # Alerts met twice (the same alert in two fixture files) are answered once.
    assert report["repeats"] >= 1
    assert report["noise"]["tickets_per_100_alerts"] == pytest.approx(
        round(100 * totals["tickets"] / totals["alerts"], 2)
    )


def test_replay_prints_a_readable_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = replay(capsys, "replay", str(FIXTURES / "graph"), str(FIXTURES / "cloud_apps"))
    assert code == 0
    assert out.startswith("Replay: policy built-in default policy")
    assert "per 100 alerts" in out and "pages" in out and "busiest entity" in out
    assert "messages per channel:" in out


def test_a_burst_is_throttled_grouped_and_asks_for_containment_once() -> None:
    """300 alerts about one API endpoint and IP in an hour: one ticket (throttle 1 per 6h), the
    rest notes on it, one message to each channel, one containment request for the ticket."""
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    template = sample_graph_alerts(now)[1]  # API_AccessFromSuspiciousIP, escalate
    alerts = []
    for i in range(300):
        payload = dict(template, id=f"burst-{i:03d}")
        payload["createdDateTime"] = (now + timedelta(seconds=10 * i)).isoformat()
        alerts.append(parse_alert(payload, "graph"))
    from riposte.alerts.policy import default_policy

    report = simulate(default_policy(), alerts)
    assert report.totals.alerts == 300
    assert report.totals.tickets == 1
    assert report.totals.notes == 299
    assert report.totals.containments == 1
    assert report.totals.containment_approval == 1
    first = report.alerts[0]
    assert first.alert == "graph-burst-000" and first.tickets_opened
    assert all(t.ticket_notes == first.tickets_opened for t in report.alerts[1:])
    assert report.messages_per_channel == {
        "slack-incoming-webhook/riposte-slack": 1,
        "teams-workflow-webhook/riposte-teams": 1,
    }
    assert report.totals.pages == 1


POLICY_WITH_STATE = """\
defaults:
  ticket: {system: jira, project: SEC}
  channels: [slack-incoming-webhook/riposte-slack]
allow:
  ip_cidrs: [192.0.2.0/24]
rules:
  - name: by-incident
    match: {alert_type: API_ParameterEnumeration}
    playbook: ticket_and_notify
    group_by_incident: true
  - name: quiet
    match: {alert_type: API_AccessFromSuspiciousIP}
    playbook: ticket_and_notify
    suppress: {key: [entity:ip], window: 1h}
  - name: low
    match: {severity: low}
    playbook: digest
    digest: {channel: slack-incoming-webhook/riposte-slack, period: 1h}
fallback: {playbook: ignore}
"""


def test_incident_grouping_suppression_allowlist_and_digests_hold_across_alerts() -> None:
    policy = parse_policy(POLICY_WITH_STATE, origin="state.yaml")
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    samples = sample_graph_alerts(now)
    enumeration, suspicious = samples[2], samples[1]
    alerts = []
    for i in range(4):  # two incidents, two alerts each
        payload = dict(enumeration, id=f"enum-{i}", incidentId=str(1000 + i // 2))
        payload["createdDateTime"] = (now + timedelta(minutes=i)).isoformat()
        alerts.append(parse_alert(payload, "graph"))
    for i, minutes in enumerate((0, 30, 90)):  # the second inside the window, the third after
        payload = dict(suspicious, id=f"susp-{i}")
        payload["createdDateTime"] = (now + timedelta(minutes=minutes)).isoformat()
        alerts.append(parse_alert(payload, "graph"))
    report = simulate(policy, alerts)
    got = {t.alert: t for t in report.alerts}
    assert got["graph-enum-0"].tickets_opened and got["graph-enum-2"].tickets_opened
    assert got["graph-enum-1"].ticket_notes == got["graph-enum-0"].tickets_opened
    assert got["graph-enum-3"].ticket_notes == got["graph-enum-2"].tickets_opened
    assert got["graph-susp-0"].tickets_opened
    assert got["graph-susp-1"].dispositions == ["suppressed"]
    assert got["graph-susp-2"].tickets_opened
    assert report.totals.suppressed == 1
    assert report.totals.tickets == 4


def test_a_custom_playbook_runs_its_own_code_in_the_replay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """examples/playbooks: the team's dfa_block_source_ip, with its policy; its own choices
    (digest the low ones, block only public IPs outside never_block) show in the report."""
    assert os.environ["RIPOSTE_PLAYBOOKS"] == str(EXAMPLES)
    code, out, err = replay(
        capsys,
        "replay",
        str(FIXTURES / "graph"),
        str(FIXTURES / "defender_cloud"),
        str(EXAMPLES / "api_alert.json"),
        "--policy",
        str(EXAMPLES / "policy.yaml"),
        "--json",
    )
    assert code == 0, err
    report = out["report"]
    rows = {r["playbook"] for r in report["rules"]}
    assert "dfa_block_source_ip" in rows
    ours = [t for t in report["alerts"] if t["playbooks"] == ["dfa_block_source_ip"]]
    assert any(t["containment"] for t in ours)
    assert all(c.startswith("approval: block_ip ") for t in ours for c in t["containment"])
    assert report["totals"]["errors"] == 0


def test_a_playbook_that_reaches_past_the_steps_is_reported_and_the_rest_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "own_calls.py"
    module.write_text(
        "from riposte.playbooks import Alert, Context, playbook\n"
        "from riposte.playbooks.api import NoParams\n\n"
        "@playbook(opens_ticket=True)\n"
        "def own_calls(alert: Alert, params: NoParams, ctx: Context) -> None:\n"
        "    '''Opens a ticket, then calls Defender itself.'''\n"
        "    ctx.ticket()\n"
        "    ctx.defender.get_client()\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "defaults: {ticket: {system: jira, project: SEC}}\n"
        "rules:\n"
        "  - {name: own, match: {source: graph}, playbook: own_calls}\n"
    )
    monkeypatch.setenv("RIPOSTE_PLAYBOOKS", str(module))
    code, out, err = replay(
        capsys, "replay", str(FIXTURES / "graph"), str(FIXTURES / "cloud_apps"),
        "--policy", str(policy), "--json",
    )  # fmt: skip
    assert code == 0, err
    report = out["report"]
    failed = [t for t in report["alerts"] if t["errors"]]
    assert failed and all(t["alert"].startswith("graph-") for t in failed)
    assert all("SimulationUnsupported" in t["errors"][0] and "--stage" in t["errors"][0]
               for t in failed)  # fmt: skip
    # What it did before the failure is in the report; the other alerts went on.
    assert all(t["tickets_opened"] for t in failed)
    assert any(t["alert"].startswith("cloud_apps-") and not t["errors"] for t in report["alerts"])
    assert report["totals"]["errors"] == len(failed)


def test_against_lists_the_differences_and_fail_on_gates_the_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = replay(
        capsys, "replay", str(FIXTURES), "--against", str(CANDIDATE), "--json",
        "--fail-on", "containments>0", "--fail-on", "tickets>50%",
    )  # fmt: skip
    assert code == 1
    assert out["breaches"] == ["containments>0: 2 -> 3 (+1)"]
    assert "fail-on: containments>0" in err
    changes = {d["alert"]: d["changes"] for d in out["differences"]}
    assert out["changed"] == len(changes) >= 2
    isolated = [c for c in changes.values() if c.get("playbooks") == ["ticket_and_notify",
                                                                      "escalate"]]  # fmt: skip
    assert isolated and isolated[0]["containment"][1].startswith("automatic: isolate_device ")
    digested = [c for c in changes.values() if c.get("playbooks") == ["ticket_and_notify",
                                                                      "digest"]]  # fmt: skip
    assert digested and digested[0]["ticket"] == ["ticket (servicenow medium)", "none"]
    assert digested[0]["messages"] == ["slack-incoming-webhook/riposte-slack", "none"]
    assert digested[0]["digest"][0] == "none"
    assert digested[0]["digest"][1].startswith("slack-incoming-webhook/riposte-slack from ")
    before, after = out["totals"]["containment_automatic"]
    assert (before, after) == (0, 1)

    code, _, _ = replay(
        capsys, "replay", str(FIXTURES), "--against", str(CANDIDATE), "--json",
        "--fail-on", "containments>1", "--fail-on", "tickets>0",
    )  # fmt: skip
    assert code == 0  # one more containment is within 1; tickets went down


def test_policy_diff_is_the_same_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from riposte.alerts.policy import default_policy_text

    old = tmp_path / "old.yaml"
    old.write_text(default_policy_text())
    markdown = tmp_path / "review.md"
    code, out, err = replay(
        capsys, "policy", "diff", str(old), str(CANDIDATE), "--alerts", str(FIXTURES),
        "--markdown", str(markdown), "--fail-on", "changed>1",
    )  # fmt: skip
    assert code == 1
    assert "alerts treated differently:" in out
    assert "fail-on: changed>1:" in err
    text = markdown.read_text()
    assert text.startswith("# Base: policy ") and "# Differences" in text
    assert "| containment_automatic | 0 | 1 | +1 |" in text


def test_bad_inputs_are_named_one_line_each_and_the_rest_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "alerts"
    folder.mkdir()
    good = json.loads((FIXTURES / "graph" / "documented_get_alert.json").read_text())
    lines = [json.dumps(good), "{not json", json.dumps({"id": "x", "what": "no source"})]
    (folder / "mixed.ndjson").write_text("\n".join(lines) + "\n")
    (folder / "binary.json").write_bytes(b"\xff\xfe\x00bad")
    (folder / "unknown.json").write_text(json.dumps([{"hello": "world"}, good]))
    code, out, err = replay(capsys, "replay", str(folder), str(tmp_path / "missing.json"),
                            "--json")  # fmt: skip
    assert code == 0, err
    skipped = {s["where"]: s["problem"] for s in out["report"]["skipped"]}
    assert skipped[str(tmp_path / "missing.json")] == "no such file"
    assert skipped[str(folder / "binary.json")] == "not UTF-8 text"
    assert "line 2 is not JSON" in skipped[str(folder / "mixed.ndjson")]
    assert any(k.startswith(f"{folder / 'unknown.json'}: alert [0]") for k in skipped)
    assert out["report"]["totals"]["alerts"] == 1  # the good alert, met twice, answered once
    assert out["report"]["repeats"] == 1
    for where in skipped:
        assert f"skipped {where}: " in err


def test_a_policy_that_does_not_load_is_named_with_its_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - name: x\n    match: {severity: loud}\n    playbook: nope\n")
    code, out, err = replay(capsys, "replay", str(FIXTURES), "--against", str(broken))
    assert code == 2
    assert out == ""
    assert f"{broken}:3" in err and f"{broken}:4" in err
    assert "the policy does not load" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-on", "tickets>>3"], "expected METRIC>N or METRIC>N%"),
        (["--fail-on", "tikets>3"], "unknown metric 'tikets'"),
        (["--fail-on", "changed>0"], "give --against"),
        (["--since", "7d"], "not both"),
    ],
)
def test_bad_options_exit_2_saying_what_is_wrong(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = replay(capsys, "replay", str(FIXTURES / "graph"), *args)
    assert code == 2
    assert message in err


def test_thresholds_without_a_base_are_figures_of_the_replay() -> None:
    from riposte.alerts.policy import default_policy

    alerts = [parse_alert(p, "graph") for p in sample_graph_alerts(datetime.now(UTC))]
    report = simulate(default_policy(), alerts)
    assert Threshold.parse("tickets>0").breached(report, None)
    assert Threshold.parse("tickets>100%").breached(report, None) is None
    assert Threshold.parse(f"tickets>{report.totals.tickets}").breached(report, None) is None


def test_hostile_alert_text_stays_text_in_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An alert title with terminal escapes, a markdown link and a pipe: the differences list
    shows the title, escaped on the terminal and as a code span in markdown."""
    payload = sample_graph_alerts(datetime.now(UTC))[2]  # parameter enumeration: changes
    hostile = "\x1b[2J\x07click [x](https://e.test) |"
    alert_file = tmp_path / "hostile.json"
    alert_file.write_text(json.dumps(dict(payload, title=hostile)))
    markdown = tmp_path / "r.md"
    code, out, _ = replay(
        capsys, "replay", str(alert_file), "--against", str(CANDIDATE), "--markdown",
        str(markdown),
    )  # fmt: skip
    assert code == 0
    assert "click" in out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out  # shown, escaped
    lines = [line for line in markdown.read_text().splitlines() if "click" in line]
    assert lines
    for line in lines:
        assert "\x1b" not in line
        cell = next(c for c in line.split(" | ") if "click" in c)
        assert cell.startswith("`") and cell.endswith("`")  # a code span: no link, no markup
        assert "\\|" in cell  # its pipe cannot split the table


def test_the_simulated_replay_needs_no_prefect_and_no_network(tmp_path: Path) -> None:
    """Run as a user would, with Prefect's API and the sandbox unreachable: the replay still
    answers, so it cannot have written anything to them."""
    env = {
        **os.environ,
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "RIPOSTE_SANDBOX_PORT": "9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    env.pop("RIPOSTE_POLICY_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", "replay", str(FIXTURES), "--json"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["report"]["totals"]["alerts"] > 20
    assert list(tmp_path.iterdir()) == []  # not even a file in the working folder


def test_the_history_of_all_four_sources_replays_without_errors() -> None:
    from riposte.alerts.policy import default_policy

    made = history(700, datetime(2026, 11, 30, tzinfo=UTC))
    alerts = [parse_alert(p, s) for s, payloads in made.items() for p in payloads]
    assert len({(a.source, a.id) for a in alerts}) == 700
    report = simulate(default_policy(), alerts)
    assert report.totals.alerts == 700 and report.totals.errors == 0
    assert report.totals.tickets < 700 / 2  # throttles and grouping hold
    assert 6.5 < report.noise.days <= 7  # spread over the week before the end


TWO_RULES = """\
defaults:
  ticket: {system: jira, project: SEC}
  channels: [slack-incoming-webhook/riposte-slack]
  oncall_channels: [teams-workflow-webhook/riposte-teams]
rules:
  - name: first
    match: {source: graph}
    playbook: ticket_and_notify
    group_by_incident: true
    continue: true
  - name: second
    match: {source: graph}
    playbook: escalate
    group_by_incident: true
  - name: elsewhere
    match: {source: defender_endpoint}
    playbook: ticket_and_notify
    group_by_incident: true
    ticket: {system: servicenow, queue: SOC}
"""


def test_two_rules_of_one_alert_are_decided_together_and_share_what_production_shares() -> None:
    """Both rules are gated before either runs (as `decide` does): the second finds the ticket
    the first opened for this same alert (not a note), its Slack message is the first one's
    (production's notify step comes back Cached), and only the page to Teams is new."""
    policy = parse_policy(TWO_RULES, origin="two.yaml")
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    payload = dict(sample_graph_alerts(now)[1], id="two-rules", incidentId="4242")
    report = simulate(policy, [parse_alert(payload, "graph")])
    (row,) = report.alerts
    assert row.rules == ["first", "second"]
    assert row.dispositions == ["ticket", "ticket"]
    assert row.tickets_opened == ["SIM-1"] and row.ticket_notes == []
    assert row.messages == [
        "slack-incoming-webhook/riposte-slack",
        "teams-workflow-webhook/riposte-teams",
    ]
    assert report.totals.tickets == 1 and report.totals.pages == 1


def test_each_ticketing_system_keeps_its_own_tickets() -> None:
    """An incident's Jira ticket is not the ServiceNow ticket of the same incident key."""
    from riposte.sandbox.samples import sample_endpoint_alerts

    policy = parse_policy(TWO_RULES, origin="two.yaml")
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    graph = parse_alert(dict(sample_graph_alerts(now)[1], id="g1", incidentId="77"), "graph")
    endpoint = parse_alert(
        dict(sample_endpoint_alerts(now)[1], id="e1", incidentId=77), "defender_endpoint"
    )
    report = simulate(policy, [graph, endpoint])
    got = {t.alert: t for t in report.alerts}
    assert got["graph-g1"].tickets_opened == ["SIM-1"]
    assert got["defender_endpoint-e1"].tickets_opened == ["SIMINC-1"]
    assert got["defender_endpoint-e1"].ticket_system[0].startswith("servicenow ")


def test_a_new_revision_of_an_alert_is_answered_again_and_a_failure_stops_its_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riposte.alerts.policy import default_policy

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    low = dict(sample_graph_alerts(now)[1], id="rev", severity="low")
    high = dict(low, severity="high")
    report = simulate(default_policy(), [parse_alert(p, "graph") for p in (low, high, high)])
    assert report.totals.alerts == 2 and report.repeats == 1
    assert sorted(t.severity for t in report.alerts) == ["high", "low"]

    module = tmp_path / "boom.py"
    module.write_text(
        "from riposte.playbooks import Alert, Context, playbook\n"
        "from riposte.playbooks.api import NoParams\n\n"
        "@playbook(notifies=False)\n"
        "def boom(alert: Alert, params: NoParams, ctx: Context) -> None:\n"
        '    """Fails."""\n'
        "    raise RuntimeError('no')\n"
    )
    monkeypatch.setenv("RIPOSTE_PLAYBOOKS", str(module))
    policy = parse_policy(
        "defaults: {ticket: {system: jira, project: SEC}}\n"
        "rules:\n"
        "  - {name: one, match: {source: graph}, playbook: boom, continue: true}\n"
        "  - {name: two, match: {source: graph}, playbook: ticket_and_notify}\n",
        origin="boom.yaml",
    )
    report = simulate(policy, [parse_alert(high, "graph")])
    (row,) = report.alerts
    assert row.dispositions == ["run", "not carried out"]
    assert row.errors == ["rule one: RuntimeError: no"]
    assert report.totals.tickets == 0 and report.totals.errors == 1


def test_bad_items_inside_a_good_document_are_skipped_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = json.loads((FIXTURES / "graph" / "documented_get_alert.json").read_text())
    hostile_name = tmp_path / "a\x1b]0;PWNED\x07.json"
    hostile_name.write_text(json.dumps({"value": [None, good, 3]}))
    code, out, err = replay(capsys, "replay", str(hostile_name), "--json")
    assert code == 0, err
    assert out["report"]["totals"]["alerts"] == 1
    problems = [s["problem"] for s in out["report"]["skipped"]]
    assert problems == [
        "field '[0]': expected an alert object, got NoneType",
        "field '[2]': expected an alert object, got int",
    ]
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;PWNED\\x07" in err


def test_an_unwritable_report_path_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = replay(
        capsys, "replay", str(FIXTURES), "--markdown", str(tmp_path / "missing" / "r.md")
    )
    assert code == 2 and out == ""
    assert f"--markdown {tmp_path / 'missing' / 'r.md'}: no such folder" in err


def test_since_without_a_prefect_server_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("RIPOSTE_HOME", str(tmp_path))  # no local stack runs from here
    monkeypatch.setenv("RIPOSTE_PREFECT_PORT", "9")
    code, _, err = replay(capsys, "replay", "--since", "1d")
    assert code == 2
    assert "set PREFECT_API_URL, or start the local stack" in err


def test_ci_gate_options_say_what_they_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    markdown = tmp_path / "gate.md"
    code, _, err = replay(
        capsys, "replay", str(FIXTURES), str(tmp_path / "typo.json"), "--against",
        str(CANDIDATE), "--fail-on", "skipped>0", "--fail-on", "digest_entries>5%",
        "--fail-on", "closed>0", "--markdown", str(markdown),
    )  # fmt: skip
    assert code == 1
    assert "fail-on: skipped>0: 1" in err
    assert "fail-on: digest_entries>5%: 10 -> 11 (+1, +10.0%)" in err
    gate = markdown.read_text().split("## Gate (--fail-on)")[1]
    assert "- `closed>0`: held" in gate and "- `skipped>0`: crossed: " in gate

    code, _, err = replay(capsys, "replay", str(FIXTURES), "--approve", "all")
    assert code == 2 and "add --stage" in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{name: x}]\n")
    monkeypatch.setenv("RIPOSTE_POLICY_FILE", str(broken))
    code, _, err = replay(capsys, "replay", str(FIXTURES / "graph"))
    assert code == 2
    assert f"{broken} (RIPOSTE_POLICY_FILE): the policy does not load" in err
