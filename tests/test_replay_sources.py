"""Replays that read their alerts from Defender (the sandbox's simulators, over HTTP) and the
`replay_alerts` flow on the real Prefect server."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from riposte.alerts.sources import parse_alert
from riposte.blocks import DefenderCredentials
from riposte.deployments.cli import main
from riposte.sandbox.history import history

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CANDIDATE = FIXTURES / "replay" / "candidate.yaml"
_API = {"graph": "graph", "defender_endpoint": "mde"}


@pytest.fixture(autouse=True)
def _default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIPOSTE_POLICY_FILE", raising=False)


def test_since_reads_the_window_from_the_sources_read_only(
    prefect_server: str,
    private_sandbox: tuple[DefenderCredentials, httpx.Client],
    capsys: pytest.CaptureFixture[str],
) -> None:
    block, sandbox = private_sandbox
    name = f"replay-defender-{secrets.token_hex(4)}"
    block.save(name)
    made = history(120, datetime.now(UTC), days=4)
    expected: set[str] = set()
    cutoff = datetime.now(UTC) - timedelta(days=2)
    for source, api in _API.items():
        payloads = made[source]
        sandbox.post(f"/_sandbox/{api}/alerts", json=payloads).raise_for_status()
        for payload in payloads:
            alert = parse_alert(payload, source)
            if alert.created_at >= cutoff + timedelta(minutes=1):  # clear of the edge
                expected.add(f"{source}-{alert.id}")
    sandbox.delete("/_sandbox/requests").raise_for_status()

    code = main(
        ["replay", "--since", "2d", "--sources", "graph,defender_endpoint",
         "--defender-block", name, "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)["report"]
    got = {t["alert"] for t in report["alerts"]}
    assert expected <= got
    assert all(t["created_at"] >= cutoff.isoformat()[:16] for t in report["alerts"])
    assert {a.split("-", 1)[0] for a in got} == {"graph", "defender_endpoint"}
    assert "graph: " in captured.err and "alert(s) since" in captured.err
    # Read-only: list calls and tokens, nothing else, and no ticket or message anywhere.
    routes = httpx.get(f"{sandbox.base_url}/_sandbox/requests").json()["routes"]
    called = [r for per in routes.values() for r in per]
    assert called and all(r.startswith("GET ") or r.endswith("/token") for r in called), called
    assert sandbox.get("/_sandbox/servicenow/incidents").json() == []
    assert sandbox.get("/_sandbox/slack/messages").json() == []

    # The replay_alerts flow reads the same window the same way.
    from riposte.flows.replay import replay_alerts

    state = replay_alerts(
        since="2d", sources=["graph", "defender_endpoint"], defender_block=name,
        return_state=True,
    )  # fmt: skip
    assert state.is_completed(), state.message
    assert state.result()["report"]["alerts"] == report["totals"]["alerts"]


def test_the_replay_flow_writes_its_report_as_an_artifact(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter

    from riposte.flows.replay import REPLAY_ARTIFACT_KEY, replay_alerts

    state = replay_alerts(
        alert_paths=[str(FIXTURES)], candidate_policy=str(CANDIDATE), return_state=True
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["report"]["alerts"] == summary["candidate"]["alerts"] > 20
    assert summary["changed"] >= 2
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key={"any_": [REPLAY_ARTIFACT_KEY]}),
        )
    mine = [a for a in artifacts if a.flow_run_id == run_id]
    assert mine, "no replay-report artifact on the run"
    text = str(mine[0].data)
    assert text.startswith("# Base: policy ") and "# Differences" in text
