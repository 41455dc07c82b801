"""`riposte replay --stage`: the alerts answered for real by the playbooks (custom ones
included) in a fresh sandbox, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from riposte.alerts.policy import default_policy_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = ROOT / "examples" / "playbooks"


def riposte(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    merged = {**os.environ, **(env or {})}
    merged.pop("RIPOSTE_POLICY_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", *args],
        env=merged, capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip


def test_staging_refuses_a_policy_that_names_a_block_outside_the_sandbox(tmp_path: Path) -> None:
    policy = tmp_path / "prod.yaml"
    policy.write_text(
        default_policy_text().replace(
            "  oncall_channels: [teams-workflow-webhook/riposte-teams]",
            "  oncall_channels: [teams-workflow-webhook/soc-oncall-prod]",
        )
    )
    done = riposte("replay", str(FIXTURES / "graph"), "--stage", "--policy", str(policy))
    assert done.returncode == 2
    assert (
        "not a sandbox block: defaults.oncall_channels: teams-workflow-webhook/soc-oncall-prod"
        in done.stderr
    )
    assert "Starting a Prefect server" not in done.stderr  # refused before anything started


def test_staging_refuses_a_ticketing_block_outside_the_sandbox() -> None:
    done = riposte(
        "replay", str(FIXTURES / "graph"), "--stage",
        env={"RIPOSTE_SERVICENOW_BLOCK": "servicenow-credentials/prod-instance"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "RIPOSTE_SERVICENOW_BLOCK: servicenow-credentials/prod-instance" in done.stderr


def test_stage_options_that_belong_to_the_simulation_are_refused() -> None:
    done = riposte("replay", str(FIXTURES / "graph"), "--stage", "--against", "x.yaml")
    assert done.returncode == 2
    assert "--against and --fail-on are for the simulated replay" in done.stderr


@pytest.mark.usefixtures("prefect_server")
def test_a_staging_run_answers_for_real_and_lists_every_side_effect(tmp_path: Path) -> None:
    """The team's own playbook (examples/playbooks) and policy, with approvals answered yes:
    a Jira ticket, a Teams message, approval links asked of the approver, the source IP
    blocked in Defender for Endpoint, the alert and its incident updated; nothing in the
    session's Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    alert = json.loads((EXAMPLES / "api_alert.json").read_text())
    markdown = tmp_path / "stage.md"
    done = riposte(
        "replay", str(EXAMPLES / "api_alert.json"), str(FIXTURES / "cloud_apps"),
        "--stage", "--approve", "all", "--policy", str(EXAMPLES / "policy.yaml"),
        "--json", "--markdown", str(markdown),
        env={"RIPOSTE_PLAYBOOKS": str(EXAMPLES)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "staged" and report["approve"] == "all"
    assert report["failed"] == []
    assert {r["state"] for r in report["responses"]} == {"Completed"}
    assert len(report["responses"]) == report["alerts"] >= 2
    assert [t["system"] for t in report["tickets"]].count("jira") >= 1
    assert report["messages"].get("teams", 0) >= 1
    (asked,) = [a for a in report["approvals"] if a["alert"] == f"graph-{alert['id']}"]
    assert asked["approvers"] == ["soc-lead@example.com"] and not asked["automatic"]
    assert "approved by riposte replay --stage" in asked["outcome"]
    assert any(i["indicatorType"] == "IpAddress" for i in report["indicators"])
    updated = {u["record"] for u in report["updates"]}
    assert f"graph-{alert['id']}" in updated
    assert any(u.startswith("incident-") for u in updated)
    assert markdown.read_text().startswith("# Staging run")
    with get_client(sync_client=True) as client:
        mine = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=alert["id"]))
        )
    assert mine == []  # the staging run had a Prefect server of its own


def test_approve_none_asks_and_contains_nothing_and_production_settings_stay_out(
    tmp_path: Path,
) -> None:
    """A production database URL in the caller's environment does not reach the staging
    server (nor do RIPOSTE_APPROVAL_KEYS and RIPOSTE_PUBLIC_URL reach its processes)."""
    production_db = tmp_path / "production.db"
    done = riposte(
        "replay", str(EXAMPLES / "api_alert.json"), "--stage", "--approve", "none",
        "--policy", str(EXAMPLES / "policy.yaml"), "--json",
        env={
            "RIPOSTE_PLAYBOOKS": str(EXAMPLES),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{production_db}",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{production_db}",
            "RIPOSTE_APPROVAL_KEYS": "production-key-" + "x" * 40,
            "RIPOSTE_PUBLIC_URL": "https://riposte.production.example",
        },
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not production_db.exists()
    report = json.loads(done.stdout)
    assert (
        report["approvals"]
        and "rejected by riposte replay --stage" in (report["approvals"][0]["outcome"])
    )
    assert report["indicators"] == [] and report["machine_actions"] == []
