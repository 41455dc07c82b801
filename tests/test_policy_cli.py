"""`riposte policy check` and `riposte policy explain`, run as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from riposte.deployments.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
ALERT_FILES = sorted(
    p for p in FIXTURES.glob("*/*") if p.suffix in (".json", ".ndjson") and p.is_file()
)
SUSPICIOUS_IP = FIXTURES / "graph" / "defender_for_apis_alert.json"

POLICY = """\
defaults:
  ticket: {system: jira, project: SEC}
  channels: [slack-incoming-webhook/riposte-slack]
rules:
  - name: latency
    match: {alert_type: API_SpikeInLatency}
    playbook: digest
    digest: {channel: slack-incoming-webhook/riposte-slack, period: 1h}
  - name: suspicious-ip
    match:
      alert_type: [API_AccessFromSuspiciousIP]
      ip_in: [203.0.113.0/24]
      severity_at_least: high
    playbook: escalate
    throttle: {key: [entity:api_endpoint, entity:ip], window: 1h}
"""


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIPOSTE_POLICY_FILE", raising=False)
    monkeypatch.delenv("RIPOSTE_TEMPLATES_DIR", raising=False)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_of_the_default_policy_prints_a_summary_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0
    assert out.startswith("built-in default policy: OK: ")
    assert "fallback ticket_and_notify" in out


def test_check_of_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    code, out, _ = run(capsys, "policy", "check", str(path))
    assert code == 0
    assert (
        out.strip() == f"{path}: OK: 2 rule(s) (digest 1, escalate 1); fallback ticket_and_notify"
    )


def test_check_of_a_broken_file_prints_file_line_field_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        POLICY.replace("severity_at_least: high", "severity_at_lest: high").replace(
            "window: 1h}", "window: soon}"
        )
    )
    code, out, err = run(capsys, "policy", "check", str(path))
    assert code == 1
    assert out.splitlines() == [
        f"{path}:13: rules[1].match.severity_at_lest: unknown field (did you mean "
        "'severity_at_least'?)",
        f"{path}:15: rules[1].throttle.window: 'soon' is not a duration like 30m, 1h, 1h30m, 1d",
    ]
    assert "2 problem(s)" in err


def test_check_reports_a_missing_template_at_the_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY + "    templates: {jira_description: mine.j2}\n")
    code, out, _ = run(capsys, "policy", "check", str(path), "--templates-dir", str(tmp_path))
    assert code == 1
    assert out.startswith(f"{path}:16: rules[1].templates.jira_description: template 'mine.j2'")
    (tmp_path / "mine.j2").write_text("{{ alert.title }}")
    assert run(capsys, "policy", "check", str(path), "--templates-dir", str(tmp_path))[0] == 0


def test_check_reads_the_policy_file_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules: [}\n")
    monkeypatch.setenv("RIPOSTE_POLICY_FILE", str(path))
    code, out, _ = run(capsys, "policy", "check")
    assert code == 1
    assert out.startswith(f"{path}:1: (yaml): ")


def test_explain_shows_the_matching_rule_each_condition_and_the_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    code, out, _ = run(capsys, "policy", "explain", str(SUSPICIOUS_IP), "--policy", str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Alert graph/dc638537732434417329_")
    assert "  rule 1 'latency' (line 5): no match" in lines
    assert "  rule 2 'suspicious-ip' (line 9): MATCHED" in lines
    assert "    [yes] ip_in: want 203.0.113.0/24; alert has IPs 203.0.113.45" in lines
    assert "    [yes] severity_at_least: want high; alert has high" in lines
    assert "Actions of 'suspicious-ip' (playbook escalate):" in lines
    assert "  - find or create a Jira ticket in SEC with priority high" in lines
    assert lines[-1].startswith("Nothing was changed")


def test_explain_prints_json_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "explain", str(SUSPICIOUS_IP), "--json")
    assert code == 0
    (explanation,) = json.loads(out)
    assert explanation["decision"]["actions"][0]["rule"] == "apis-suspicious-source"
    assert explanation["checked"][-1]["matched"] is True


@pytest.mark.parametrize(
    "alert_file", ALERT_FILES, ids=[f"{p.parent.name}/{p.name}" for p in ALERT_FILES]
)
def test_explain_works_on_the_alerts_of_every_source(
    alert_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "policy", "explain", str(alert_file), "--json")
    assert code == 0, err
    explanations = json.loads(out)
    assert explanations
    for explanation in explanations:
        assert explanation["decision"]["actions"], explanation
        assert explanation["alert_source"] == alert_file.parent.name


def test_explain_with_a_broken_policy_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - {name: x, playbook: nope}\n")
    code, out, _ = run(capsys, "policy", "explain", str(SUSPICIOUS_IP), "--policy", str(path))
    assert code == 1
    assert out.startswith(f"{path}:2: rules[0].playbook: ")


def test_explain_of_an_unreadable_alert_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "policy", "explain", str(tmp_path / "none.json"))
    assert code == 2
    assert "no such file" in err


def test_policy_commands_run_from_the_installed_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", "policy", "explain", str(SUSPICIOUS_IP)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "rule 2 'apis-suspicious-source'" in result.stdout
