"""Shared fixtures: a real Prefect server, the sandbox, the served flows and the intake.

Prefect reads its settings from the environment when it is first imported, so the environment
for the whole test session is set here, before anything imports prefect.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.servers import free_port, serve_in_thread

# RIPOSTE_TEST_STATE keeps the servers' logs in a known folder, for debugging.
_STATE = Path(os.environ.get("RIPOSTE_TEST_STATE") or tempfile.mkdtemp(prefix="riposte-tests-"))
_STATE.mkdir(parents=True, exist_ok=True)
_PREFECT_PORT = free_port()
PREFECT_API_URL = f"http://127.0.0.1:{_PREFECT_PORT}/api"
_INTAKE_PORT = free_port()
os.environ.update(
    {
        "PREFECT_HOME": str(_STATE / "prefect"),
        "PREFECT_API_URL": PREFECT_API_URL,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_STATE / "results"),
        "RIPOSTE_HOME": str(_STATE / "riposte"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "RIPOSTE_POLL_PAUSED": "true",
        # Calm test traffic waits for its runs, to name them in the answer, however slow a busy
        # machine makes their creation (a storm, or Prefect down, is still answered `queued`).
        "RIPOSTE_INTAKE_RUN_WAIT_SECONDS": "60",
        "RIPOSTE_POLL_SOURCES": "graph,defender_endpoint,cloud_apps,defender_cloud",
        # The responder reads its settings once, at start: the policy file's path is fixed for
        # the session, and tests that need another policy rewrite the file (`use_policy`).
        "RIPOSTE_POLICY_FILE": str(_STATE / "policy.yaml"),
        "RIPOSTE_DIGEST_PAUSED": "true",
        # A sync run killed by the chaos test delays its tickets this long, not two minutes.
        "RIPOSTE_SYNC_LOCK_HOLD_SECONDS": "15",
        # The approval link keys, in a file as the local stack keeps them (never in Prefect).
        "RIPOSTE_APPROVAL_KEY_FILE": str(_STATE / "approval.key"),
        # Workers load the same playbooks as the local stack: the built-ins and the example.
        "RIPOSTE_PLAYBOOKS": str(Path(__file__).resolve().parent.parent / "examples" / "playbooks"),
        # The approval sweep runs at each approval's deadline; its safety-net schedule stays
        # out of the tests' way.
        "RIPOSTE_APPROVAL_SWEEP_SECONDS": "3600",
        # Approval links point at the session's intake (`intake_url`).
        "RIPOSTE_PUBLIC_URL": f"http://127.0.0.1:{_INTAKE_PORT}",
        # The per-API rate limits (riposte.limits) wide open: strict acquisition then costs one
        # Prefect call per request and never a wait. test_rate_limits tightens one at a time.
        **{
            f"RIPOSTE_RATE_{api}": "100000/s"
            for api in (
                *("GRAPH", "MDE", "MDEBATCH", "MDCA", "ARM"),
                *("SERVICENOW", "JIRA", "SLACK", "TEAMS"),
            )
        },
    }
)

# The session's policy: every alert gets its own ticket and a message on both channels, which is
# what the playbook tests check. Policy tests swap in their own and put this one back.
SESSION_POLICY = """\
version: 1
description: Test session policy, one ticket and one message per channel per alert
defaults:
  ticket: {system: servicenow}
  channels: [slack-incoming-webhook/riposte-slack, teams-workflow-webhook/riposte-teams]
rules:
  # chaos/scenarios.py search-lag (tests/test_chaos.py): Jira, one issue per Defender incident.
  - name: search-lag
    match: {title_pattern: '^\\[chaos search-lag\\]'}
    playbook: ticket_and_notify
    ticket: {system: jira, project: SEC}
    group_by_incident: true
fallback:
  playbook: ticket_and_notify
"""
POLICY_FILE = _STATE / "policy.yaml"
POLICY_FILE.write_text(SESSION_POLICY)

from riposte.sandbox.app import create_app as create_sandbox  # noqa: E402
from riposte.sandbox.config import SandboxConfig  # noqa: E402

if TYPE_CHECKING:
    from riposte.blocks import DefenderCredentials

REPO = Path(__file__).resolve().parent.parent
PREFECT_CLI = str(Path(sys.executable).parent / "prefect")


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect server (SQLite) in a subprocess, for the whole session."""
    log_path = _STATE / "prefect-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [PREFECT_CLI, "server", "start", "--host", "127.0.0.1", "--port", str(_PREFECT_PORT)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"Prefect server exited:\n{_log_tail(log_path)}")
                try:
                    return httpx.get(f"{PREFECT_API_URL}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, timeout=120, interval=0.5, what="the Prefect server")
            from riposte.limits import ensure_rate_limits

            ensure_rate_limits()  # as setup does: clients acquire them strictly inside runs
            yield PREFECT_API_URL
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def sandbox_config() -> SandboxConfig:
    """Random credentials, so no test can pass by relying on the sandbox defaults."""
    return SandboxConfig(
        tenant_id=f"tenant-{secrets.token_hex(4)}",
        client_id=f"app-{secrets.token_hex(4)}",
        client_secret=secrets.token_urlsafe(24),
        servicenow_password=secrets.token_urlsafe(18),
        jira_api_token=secrets.token_urlsafe(18),
        slack_hook_path=f"T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/"
        f"{secrets.token_hex(12)}",
        teams_sig=secrets.token_urlsafe(16),
    )


@pytest.fixture(scope="session")
def sandbox_url(sandbox_config: SandboxConfig) -> Iterator[str]:
    with serve_in_thread(create_sandbox(sandbox_config)) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    """A client on the sandbox, whose state (alerts, tickets, messages, faults) starts empty."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


@pytest.fixture
def private_sandbox(
    sandbox_config: SandboxConfig,
) -> Iterator[tuple[DefenderCredentials, httpx.Client]]:
    """A sandbox of this test's own: the session's is shared with the responder, whose runs
    (a poll, a reconcile) may read the same API while a test counts its calls."""
    from riposte.blocks import DefenderCredentials
    from riposte.deployments.local import sandbox_blocks

    with (
        serve_in_thread(create_sandbox(sandbox_config)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        block = sandbox_blocks(url, sandbox_config)["riposte-defender"]
        assert isinstance(block, DefenderCredentials)
        yield block, client


@pytest.fixture(scope="session")
def stack_blocks(prefect_server: str, sandbox_url: str, sandbox_config: SandboxConfig) -> list[str]:
    from riposte.deployments.local import save_sandbox_blocks

    return save_sandbox_blocks(sandbox_url, sandbox_config)


@pytest.fixture(scope="session")
def served_flows(stack_blocks: list[str]) -> Iterator[None]:
    """`riposte serve` in a subprocess: the responder that executes deployment runs."""
    log_path = _STATE / "served-flows.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riposte.deployments.serve"],
            cwd=REPO,
            # Its runs log at Prefect's default level, as in production: tests read what the
            # runs tell an analyst (INFO lines), not only the warnings.
            env={**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            from prefect.client.orchestration import get_client
            from prefect.exceptions import ObjectNotFound

            from riposte.deployments.serve import deployments
            from riposte.settings import get_settings

            # Every deployment the responder registers (one by one), not only the first few:
            # a test that reads the run forms may come first.
            expected = [f"{flow.name}/{d.name}" for d, flow in deployments(get_settings())]

            missing = list(expected)

            def registered() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"served flows exited:\n{_log_tail(log_path)}")
                with get_client(sync_client=True) as client:
                    for name in list(missing):
                        try:
                            client.read_deployment_by_name(name)
                        except ObjectNotFound:
                            return False
                        missing.remove(name)
                return True

            try:
                wait_until(registered, timeout=90, interval=0.5, what="served deployments")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; not registered: {', '.join(missing)}") from None
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def use_policy() -> Iterator[Callable[[str], None]]:
    """Write a policy to the session's policy file (the responder reads it at every run); the
    session policy is put back afterwards."""

    def write(text: str) -> None:
        POLICY_FILE.write_text(text)

    try:
        yield write
    finally:
        POLICY_FILE.write_text(SESSION_POLICY)


INTAKE_TOKEN = secrets.token_urlsafe(24)
INTAKE_HMAC_KEYS = [secrets.token_urlsafe(24), secrets.token_urlsafe(24)]  # old and new


@pytest.fixture(scope="session")
def intake_url(prefect_server: str) -> Iterator[str]:
    from riposte.deployments.intake import create_app
    from riposte.settings import Settings

    app = create_app(
        Settings(
            intake_tokens=f"{secrets.token_urlsafe(8)},{INTAKE_TOKEN}",
            intake_hmac_keys=",".join(INTAKE_HMAC_KEYS),
        )
    )
    with serve_in_thread(app, port=_INTAKE_PORT) as url:
        yield url
