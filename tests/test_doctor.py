"""`riposte doctor` against sandboxes configured right and wrong on purpose: each problem is
named with its block, its check and its fix; nothing is written."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from riposte.deployments.cli import main
from riposte.deployments.local import sandbox_blocks
from riposte.sandbox.app import create_app
from riposte.sandbox.config import ALL_APP_ROLES, SandboxConfig
from tests.servers import serve_in_thread

POLICY = """\
version: 1
defaults:
  ticket: {system: jira, project: SEC}
  channels: [slack-incoming-webhook/DOCTOR-slack]
  containment:
    approvers: [{name: soc-lead@example.com, channels: [slack-incoming-webhook/DOCTOR-slack]}]
rules:
  - name: endpoint-high
    match: {source: defender_endpoint, severity: high}
    playbook: escalate
    containment: {actions: [isolate_device]}
  - name: to-servicenow
    match: {source: graph}
    playbook: ticket_and_notify
    ticket: {system: servicenow, queue: SOC}
"""


@pytest.fixture
def doctor(prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run `riposte doctor` against a sandbox of the test's own, configured as asked: its
    blocks saved in Prefect under names of the test's own."""
    stack: list[Any] = []
    monkeypatch.delenv("RIPOSTE_PUBLIC_URL", raising=False)

    def run(
        capsys: pytest.CaptureFixture[str], policy_text: str = POLICY, **config: Any
    ) -> tuple[int, dict[str, Any]]:
        cfg = SandboxConfig(**config)
        context = serve_in_thread(create_app(cfg))
        url = context.__enter__()
        stack.append(context)
        tag = secrets.token_hex(4)
        names = {}
        for name, block in sandbox_blocks(url, cfg).items():
            block.save(f"{name}-{tag}", overwrite=True)
            names[name] = f"{block.get_block_type_slug()}/{name}-{tag}"
        policy = tmp_path / f"policy-{tag}.yaml"
        policy.write_text(policy_text.replace("DOCTOR-slack", f"riposte-slack-{tag}"))
        monkeypatch.setenv("RIPOSTE_SERVICENOW_BLOCK", names["riposte-servicenow"])
        monkeypatch.setenv("RIPOSTE_JIRA_BLOCK", names["riposte-jira"])
        # One incident, so that an unreadable field shows.
        httpx.post(
            f"{url}/servicenow/api/now/table/incident",
            json={"short_description": "x", "correlation_id": "riposte-doctor-test"},
            auth=(cfg.servicenow_user, cfg.servicenow_password),
            timeout=10,
        ).raise_for_status()
        code = main(
            ["doctor", "--json", "--policy", str(policy), "--sources",
             "graph,defender_endpoint", "--defender-block", f"riposte-defender-{tag}"]
        )  # fmt: skip
        out = capsys.readouterr().out
        return code, json.loads(out)

    yield run
    for context in stack:
        context.__exit__(None, None, None)


def failing(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {f["check"]: f for f in report["findings"] if f["status"] in ("missing", "failed")}


def test_doctor_passes_against_a_sandbox_with_everything_granted(
    doctor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = doctor(capsys)
    assert failing(report) == {}
    assert code == 0 and report["ok"] is True
    checks = {f["check"]: f["status"] for f in report["findings"]}
    assert checks["Defender for Endpoint: isolate machines"] == "ok"
    assert checks["Microsoft Graph: read alerts"] == "ok"
    assert checks["query incident by correlation_id"] == "ok"
    assert checks["project SEC: create screen has priority"] == "ok"
    assert checks["list one defender_endpoint alert"] == "ok"


def test_a_missing_public_url_is_a_problem_only_off_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against the sandbox on this machine, approval links to the local intake work; a policy
    without approvals needs no public URL anywhere."""
    from riposte.deployments.doctor import check_public_url

    monkeypatch.delenv("RIPOSTE_PUBLIC_URL", raising=False)
    (remote,) = check_public_url(approvals=True, local=False)
    assert remote.status == "missing" and "RIPOSTE_PUBLIC_URL" in remote.fix
    (local,) = check_public_url(approvals=True, local=True)
    assert local.status == "note"
    (none,) = check_public_url(approvals=False, local=False)
    assert none.status == "note"


def test_doctor_says_a_public_url_is_not_https(
    doctor: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIPOSTE_PUBLIC_URL", "http://127.0.0.1:9")
    code, report = doctor(capsys)
    (problem,) = failing(report).values()
    assert problem["detail"] == "the URL is http, not https"
    assert code == 1


def test_doctor_names_a_missing_permission(doctor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    roles = [r for r in ALL_APP_ROLES if r != "Machine.Isolate"]
    code, report = doctor(capsys, app_roles=roles)
    assert code == 1
    problem = failing(report)["Defender for Endpoint: isolate machines"]
    assert problem["status"] == "missing"
    assert "Machine.Isolate" in problem["detail"] and "endpoint-high" in problem["detail"]
    assert "grant the application permission Machine.Isolate" in problem["fix"]
    assert problem["block"].startswith("riposte-defender-")


def test_doctor_names_alert_permissions_and_the_refused_listing(
    doctor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    roles = [r for r in ALL_APP_ROLES if not r.startswith("SecurityAlert")]
    _, report = doctor(capsys, app_roles=roles)
    problems = failing(report)
    assert problems["Microsoft Graph: read alerts"]["status"] == "missing"
    assert problems["list one graph alert"]["status"] == "failed"
    assert "Missing application roles" in problems["list one graph alert"]["detail"]


def test_doctor_names_a_jira_create_screen_without_priority(
    doctor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = doctor(capsys, jira_screen_missing_fields=["priority"])
    problem = failing(report)["project SEC: create screen has priority"]
    assert "add priority to the create screen of SEC" in problem["fix"]


def test_doctor_names_a_servicenow_user_who_cannot_read_correlation_id(
    doctor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = doctor(
        capsys,
        servicenow_unreadable_fields=["correlation_id"],
        servicenow_journal_readable=False,
    )
    problems = failing(report)
    assert "without correlation_id" in problems["read incident.correlation_id"]["detail"]
    query = problems["query incident by correlation_id"]
    assert "matched 1 incident(s)" in query["detail"]
    assert "glide.invalid_query.returns_no_rows" in query["fix"]
    assert "sys_journal_field" in problems["read work notes (sys_journal_field)"]["fix"]


def test_doctor_cannot_run_without_its_defender_block(
    prefect_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["doctor", "--defender-block", f"no-such-block-{secrets.token_hex(3)}"])
    assert code == 2
    assert "riposte doctor: block no-such-block-" in capsys.readouterr().err


def _direct(policy_text: str, **config: Any) -> Iterator[tuple[Any, Any]]:
    from riposte.alerts.policy import parse_policy

    cfg = SandboxConfig(**config)
    with serve_in_thread(create_app(cfg)) as url:
        yield sandbox_blocks(url, cfg)["riposte-defender"], parse_policy(policy_text, origin="p")


DISABLE = """\
defaults: {ticket: {system: jira, project: SEC}}
rules:
  - name: users
    match: {source: graph}
    playbook: escalate
    containment: {actions: [disable_user], automatic: true}
"""


def test_disabling_a_user_needs_reading_users_too_and_a_legacy_cloud_apps_token_is_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from riposte.deployments.doctor import check_defender

    roles = ["SecurityAlert.ReadWrite.All", "User.EnableDisableAccount.All"]
    for block, policy in _direct(DISABLE, app_roles=roles):
        found = {f.check: f for f in check_defender("b", block, policy, ["graph", "cloud_apps"])}
        assert found["Microsoft Graph: disable users"].status == "ok"
        assert found["Microsoft Graph: read users"].status == "missing"
        assert "User.Read.All" in found["Microsoft Graph: read users"].detail
        # No Investigation.* role: the Entra token could not read Cloud Apps alerts...
        assert found["Defender for Cloud Apps: read alerts"].status == "missing"
        legacy = block.model_copy(update={"cloud_apps_api_token": "x" * 20})
        found = {f.check: f for f in check_defender("b", legacy, policy, ["cloud_apps"])}
        # ...but the block uses a legacy API token: its permissions are its user's.
        assert found["token for Defender for Cloud Apps"].status == "note"
        assert "Defender for Cloud Apps: read alerts" not in found


def test_a_token_that_is_not_a_jwt_cannot_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from riposte.blocks.entra import ClientCredentialsAuth
    from riposte.deployments.doctor import check_defender

    monkeypatch.setattr(ClientCredentialsAuth, "token", lambda self, force=False: "opaque")
    for block, policy in _direct(DISABLE):
        found = {f.check: f for f in check_defender("b", block, policy, ["graph"])}
        assert found["Microsoft Graph: read alerts"].status == "failed"
        assert "not a JWT" in found["Microsoft Graph: read alerts"].detail


def test_a_malformed_public_url_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from riposte.deployments.doctor import check_public_url

    monkeypatch.setenv("RIPOSTE_PUBLIC_URL", "https://user:pw@[::1")
    (finding,) = check_public_url(approvals=True, local=False)
    assert finding.status == "failed" and "pw" not in finding.detail + finding.fix
