"""The `riposte` command line, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "graph"


def riposte(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_normalize_prints_one_json_line_per_alert_with_the_contract_keys() -> None:
    files = sorted(FIXTURES.glob("*.json"))
    result = riposte("normalize", *map(str, files))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(files)
    for line in lines:
        alert = json.loads(line)
        assert {"source", "id", "title", "severity", "status", "created_at", "entities"} <= set(
            alert
        )
        assert alert["source"] == "graph"
        assert alert["created_at"].endswith("Z") or alert["created_at"].endswith("+00:00")
        assert all({"type", "value"} <= set(e) for e in alert["entities"])


def test_normalize_reads_envelopes_and_ndjson(tmp_path: Path) -> None:
    alert = json.loads((FIXTURES / "defender_for_apis_alert.json").read_text())
    other = dict(alert, id="second")
    (tmp_path / "env.json").write_text(json.dumps({"value": [alert, other]}))
    (tmp_path / "lines.ndjson").write_text(json.dumps(alert) + "\n" + json.dumps(other) + "\n")
    result = riposte(
        "normalize", "--source", "graph", str(tmp_path / "env.json"), str(tmp_path / "lines.ndjson")
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(x)["id"] for x in result.stdout.splitlines()] == [
        alert["id"],
        "second",
        alert["id"],
        "second",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not JSON"),
        (
            '{"title": "no id", "providerAlertId": "x", "createdDateTime": "2024-01-01T00:00:00Z"}',
            "id",
        ),
        ("", "empty"),
        ("42", "expected"),
    ],
)
def test_normalize_bad_file_exits_2_with_one_line_naming_file_and_problem(
    tmp_path: Path, content: str, expected: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = riposte("normalize", "--source", "graph", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_normalize_missing_file_exits_2(tmp_path: Path) -> None:
    result = riposte("normalize", str(tmp_path / "nope.json"))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_status_json_lists_every_url_and_reports_a_stopped_stack(tmp_path: Path) -> None:
    import os

    from tests.servers import free_port

    env = {
        **os.environ,
        "RIPOSTE_PREFECT_PORT": str(free_port()),
        "RIPOSTE_INTAKE_PORT": str(free_port()),
        "RIPOSTE_SANDBOX_PORT": str(free_port()),
    }
    result = riposte("status", "--json", env=env)
    info = json.loads(result.stdout)
    assert result.returncode == 3
    assert info["running"] is False
    assert info["prefect_api"].endswith(f":{env['RIPOSTE_PREFECT_PORT']}/api")
    assert info["responses"] == f"{info['prefect_ui']}/runs?tag=response"
    assert set(info["simulators"]) == {"identity", "graph", "servicenow", "jira", "slack", "teams"}


def test_blocks_register_registers_every_block_type(prefect_server: str) -> None:
    import os

    result = riposte("blocks", "register", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    for slug in (
        "defender-credentials",
        "servicenow-credentials",
        "jira-credentials",
        "slack-incoming-webhook",
        "teams-workflow-webhook",
    ):
        assert f"registered block type {slug}" in result.stdout
    prefect = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "riposte.blocks"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prefect.returncode == 0, prefect.stdout + prefect.stderr


# --- every Defender source (issue 3) --------------------------------------------------------

DEFENDER_FIXTURES = Path(__file__).parent / "fixtures"
NEW_SOURCES = ("defender_endpoint", "cloud_apps", "defender_cloud")


def _alert_count(path: Path) -> int:
    from riposte.alerts.sources import iter_alert_payloads

    return len(list(iter_alert_payloads(json.loads(path.read_text(encoding="utf-8")))))


@pytest.mark.parametrize("source", NEW_SOURCES)
def test_normalize_detects_each_defender_source_without_being_told(source: str) -> None:
    files = sorted((DEFENDER_FIXTURES / source).glob("*.json"))
    result = riposte("normalize", *map(str, files))

    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(alerts) == sum(_alert_count(f) for f in files)
    assert {a["source"] for a in alerts} == {source}
    for alert in alerts:
        assert alert["id"] and alert["title"] and alert["created_at"].endswith("Z")
        assert alert["severity"] in {"unknown", "informational", "low", "medium", "high"}
        assert alert["status"] in {"new", "in_progress", "resolved", "unknown"}


def test_normalize_reads_one_file_mixing_every_source(tmp_path: Path) -> None:
    payloads = [
        json.loads((DEFENDER_FIXTURES / name).read_text(encoding="utf-8"))
        for name in (
            "graph/documented_get_alert.json",
            "defender_endpoint/documented_get_alert.json",
            "cloud_apps/documented_list_alert.json",
            "defender_cloud/defender_for_apis_arm_alert.json",
        )
    ]
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text("".join(json.dumps(p) + "\n" for p in payloads), encoding="utf-8")

    result = riposte("normalize", str(mixed))

    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [
        "graph",
        "defender_endpoint",
        "cloud_apps",
        "defender_cloud",
    ]


def test_normalize_reads_defender_for_endpoint_ndjson() -> None:
    result = riposte(
        "normalize", str(DEFENDER_FIXTURES / "defender_endpoint/streamed_alerts.ndjson")
    )

    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [
        "da637308392288907382_-880718168",
        "da637084217856368682_-292920499",
    ]


def test_normalize_reads_the_cloud_apps_data_envelope_and_the_arm_value_envelope() -> None:
    result = riposte(
        "normalize",
        str(DEFENDER_FIXTURES / "cloud_apps/list_response_envelope.json"),
        str(DEFENDER_FIXTURES / "defender_cloud/arm_2020_01_01_list_alerts.json"),
    )

    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [
        "cloud_apps",
        "cloud_apps",
        "defender_cloud",
    ]


def test_normalize_source_flag_forces_a_parser_detection_would_not_pick(tmp_path: Path) -> None:
    payload = json.loads(
        (DEFENDER_FIXTURES / "defender_endpoint/documented_get_alert.json").read_text()
    )
    payload["properties"] = {}  # a field no Defender for Endpoint alert has: detection gives up
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(payload), encoding="utf-8")

    detected = riposte("normalize", str(odd))
    forced = riposte("normalize", "--source", "defender_endpoint", str(odd))

    assert detected.returncode == 2 and "--source" in detected.stderr
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["id"] == "da637472900382838869_1364969609"


@pytest.mark.parametrize(
    ("source", "content", "expected"),
    [
        ("defender_endpoint", '{"id": "x", "alertCreationTime": "yesterday"}', "alertCreationTime"),
        ("defender_endpoint", '{"title": "no id", "machineId": "m"}', "'id'"),
        ("cloud_apps", '{"title": "no id", "timestamp": 1621941916475}', "'_id'"),
        ("cloud_apps", '{"_id": "603f", "timestamp": true}', "'timestamp'"),
        ("defender_cloud", '{"properties": {"systemAlertId": "a"}}', "timeGeneratedUtc"),
        ("defender_cloud", '{"properties": ["not", "an", "object"]}', "'properties'"),
        (None, '{"_id": "603f704aaf7417985bbf3b22", "timestamp": "soon"}', "'timestamp'"),
        (None, '{"id": "x", "title": "which API?"}', "--source"),
    ],
)
def test_normalize_broken_defender_alert_exits_2_with_one_line_naming_the_field(
    tmp_path: Path, source: str | None, content: str, expected: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")

    result = riposte("normalize", *(["--source", source] if source else []), str(bad))

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and expected in lines[0], lines
    assert "Traceback" not in result.stderr


def test_normalize_survives_a_lone_surrogate_in_a_field(tmp_path: Path) -> None:
    alert = json.loads((FIXTURES / "defender_for_apis_alert.json").read_text())
    text = json.dumps(alert).replace('"title": "', '"title": "\\ud800 ', 1)
    (tmp_path / "odd.json").write_text(text)
    result = riposte("normalize", str(tmp_path / "odd.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["title"].startswith("\ud800")
