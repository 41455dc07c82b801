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
