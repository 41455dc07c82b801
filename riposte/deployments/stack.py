"""The local stack behind `make run`: Prefect server (SQLite), sandbox, served flows, intake."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from riposte.settings import Settings

SANDBOX_PREFIX = {
    "graph": "graph",
    "defender_endpoint": "mde",
    "cloud_apps": "mdca",
    "defender_cloud": "arm",
}
# Where each source keeps the id that names the alert everywhere else in its payload.
ID_FIELD = {
    "graph": "id",
    "defender_endpoint": "id",
    "cloud_apps": "_id",
    "defender_cloud": "name",
}


def _fresh_ids(source: str, alert: dict[str, Any]) -> dict[str, Any]:
    """The alert with its id (and every mention of it: links, resource ids) made unique."""
    old = str(alert[ID_FIELD[source]])
    new = old[:-8] + secrets.token_hex(4) if len(old) > 8 else old + secrets.token_hex(4)
    fresh: dict[str, Any] = json.loads(json.dumps(alert).replace(old, new))
    return fresh


class StackError(RuntimeError):
    """The local stack could not start; the message says which part and where its log is."""


SCHEDULED_AHEAD = "PT10M"  # an ISO 8601 duration: Prefect refuses a number of seconds


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment shared by every process of the local stack."""
    home = settings.home.resolve()
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": settings.prefect_api_url,
        "PREFECT_SERVER_API_HOST": settings.host,
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "results"),
        # The Prefect API answers only with this credential, and to no other origin than its UI:
        # open, it would let any local process or web page read and change the runs.
        "PREFECT_SERVER_API_AUTH_STRING": prefect_auth_string(settings),
        "PREFECT_API_AUTH_STRING": prefect_auth_string(settings),
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": settings.prefect_ui_url.rstrip("/"),
        # The server creates each schedule's runs this far ahead, at least 3 (Prefect's default
        # is an hour: sixty Scheduled polls in the poll's Upcoming tab). It tops them up every
        # minute, so ten minutes leave a margin.
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": SCHEDULED_AHEAD,
        "RIPOSTE_HOME": str(home),
        # Workers sign approval links and the intake verifies them with this key, kept out of
        # Prefect (whose API anyone who reaches it can read).
        "RIPOSTE_APPROVAL_KEY_FILE": str(
            (settings.approval_key_file or home / "approval.key").resolve()
        ),
        "RIPOSTE_POLL_SOURCES": "graph,defender_endpoint,cloud_apps,defender_cloud",
    }


PREFECT_AUTH_USER = "riposte"


def prefect_auth_file(settings: Settings) -> Path:
    return settings.home.resolve() / "prefect-api.auth"


def prefect_auth_string(settings: Settings) -> str:
    """``user:password`` for the local Prefect API (HTTP Basic), made once, in a 0600 file."""
    return f"{PREFECT_AUTH_USER}:{local_secret(prefect_auth_file(settings))}"


def status(settings: Settings) -> dict[str, Any]:
    """URLs of every part of the stack and whether each answers now."""
    sandbox = settings.sandbox_url
    urls = {
        "prefect_api": settings.prefect_api_url,
        "prefect_ui": settings.prefect_ui_url,
        "responses": settings.responses_url,
        "intake": settings.intake_url,
        "sandbox": sandbox,
        "simulators": {
            "identity": f"{sandbox}/login",
            "graph": f"{sandbox}/graph/v1.0/security/alerts_v2",
            "servicenow": f"{sandbox}/servicenow/api/now/table/incident",
            "jira": f"{sandbox}/jira/rest/api/3",
            "slack": f"{sandbox}/slack/services",
            "teams": f"{sandbox}/teams/workflows",
        },
    }
    probes = {
        "prefect": f"{settings.prefect_api_url}/health",
        "intake": f"{settings.intake_url}/health",
        "sandbox": f"{sandbox}/_sandbox/health",
    }
    up = {name: _answers(url) for name, url in probes.items()}
    return {**urls, "up": up, "running": all(up.values())}


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def local_secret(path: Path) -> str:
    """A random secret kept in a 0600 file, created on first use (local stack only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another `riposte` made it meanwhile
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class LocalStack:
    settings: Settings
    say: Callable[[str], None] = print
    processes: list[Process] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.settings.home.resolve()

    def intake_token(self) -> str:
        """The local intake's bearer token, made once and kept in a 0600 file of the stack."""
        return local_secret(self.home / "intake.token")

    def intake_hmac_key(self) -> str:
        """The local intake's HMAC key (what `riposte send` signs with), in a 0600 file."""
        return local_secret(self.home / "intake.hmac-key")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order.
        )
        process = Process(name, popen, log_path, log)
        self.processes.append(process)
        return process

    def _wait_for(self, process: Process, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise StackError(f"{process.name} exited early; see {process.log_path}")
            if _answers(url, timeout=1.0):
                return
            time.sleep(0.25)
        raise StackError(
            f"{process.name} did not answer at {url} in {timeout:.0f}s; see {process.log_path}"
        )

    def start(self) -> None:
        s = self.settings
        for what, port in (
            ("Prefect", s.prefect_port),
            ("intake", s.intake_port),
            ("sandbox", s.sandbox_port),
        ):
            if not _port_free(s.host, port):
                raise StackError(
                    f"port {port} for the {what} is taken; stop what uses it or set "
                    f"RIPOSTE_{'PREFECT' if what == 'Prefect' else what.upper()}_PORT"
                )
        env = stack_env(s)
        os.environ.update(env)  # this process talks to the same Prefect server
        token = self.intake_token()
        py = sys.executable
        prefect_cli = str(Path(py).parent / "prefect")

        self.say("Starting the Prefect server (SQLite) ...")
        server = self._spawn(
            "prefect-server",
            [prefect_cli, "server", "start", "--host", s.host, "--port", str(s.prefect_port)],
            env,
        )
        sandbox = self._spawn(
            "sandbox",
            [py, "-m", "riposte.sandbox", "--host", s.host, "--port", str(s.sandbox_port)],
            env,
        )
        self._wait_for(sandbox, f"{s.sandbox_url}/_sandbox/health", 30)
        self._wait_for(server, f"{s.prefect_api_url}/health", 120)

        from riposte.deployments.local import save_sandbox_blocks

        names = save_sandbox_blocks(s.sandbox_url)
        self.say(f"Blocks pointing at the sandbox: {', '.join(names)}")

        served = self._spawn("served-flows", [py, "-m", "riposte.deployments.serve"], env)
        intake = self._spawn(
            "intake",
            [py, "-m", "riposte.deployments.intake"],
            {
                **env,
                "RIPOSTE_INTAKE_TOKENS": token,
                "RIPOSTE_INTAKE_HMAC_KEYS": self.intake_hmac_key(),
            },
        )
        self._wait_for(intake, f"{s.intake_url}/health", 60)
        self._wait_for_deployments(served, 60)

    def _wait_for_deployments(self, served: Process, timeout: float) -> None:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        from riposte.settings import POLL_DEPLOYMENT, RESPOND_DEPLOYMENT

        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                if served.popen.poll() is not None:
                    raise StackError(f"served flows exited early; see {served.log_path}")
                try:
                    for name in (RESPOND_DEPLOYMENT, POLL_DEPLOYMENT):
                        client.read_deployment_by_name(name)
                    return
                except ObjectNotFound:
                    time.sleep(0.5)
        raise StackError(f"deployments not registered in {timeout:.0f}s; see {served.log_path}")

    def load_samples(self) -> dict[str, Any]:
        """Put sample alerts of every source in the simulated Defender APIs, push half of each
        source through the intake, and start a poll at once for the rest (the pushed ones are
        found again and not answered twice)."""
        from prefect.deployments import run_deployment

        from riposte.sandbox.samples import sample_alerts_by_source
        from riposte.settings import POLL_DEPLOYMENT

        s = self.settings
        headers = {"Authorization": f"Bearer {self.intake_token()}"}
        loaded = pushed = 0
        for source, alerts in sample_alerts_by_source(datetime.now(UTC)).items():
            # Fresh ids every start: an earlier `make run` answered the old ones already.
            alerts = [_fresh_ids(source, alert) for alert in alerts]
            httpx.post(
                f"{s.sandbox_url}/_sandbox/{SANDBOX_PREFIX[source]}/alerts",
                json=alerts,
                timeout=10,
            ).raise_for_status()
            loaded += len(alerts)
            for alert in alerts[: (len(alerts) + 1) // 2]:
                r = httpx.post(
                    f"{s.intake_url}/alerts/{source}", json=alert, headers=headers, timeout=30
                )
                r.raise_for_status()
                pushed += 1
        run_deployment(POLL_DEPLOYMENT, timeout=0, as_subflow=False)
        return {"loaded": loaded, "pushed": pushed}

    def stop(self) -> None:
        """Stop the parts in the reverse order of their start, each before the next, so that
        the intake and the responder can still report to Prefect while they finish."""
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait(timeout=5)
            process.log.close()
        self.processes.clear()

    def watch(self) -> None:
        """Block until Ctrl-C or until a part of the stack dies."""
        while True:
            for process in self.processes:
                if process.popen.poll() is not None:
                    raise StackError(f"{process.name} stopped unexpectedly; see {process.log_path}")
            time.sleep(1)


def print_banner(
    settings: Settings, samples: dict[str, Any] | None, say: Callable[[str], None]
) -> None:
    info = status(settings)
    say("")
    say("Riposte is running.")
    say(f"  Responses       {info['responses']}  (the Prefect UI's runs, responses only)")
    say(f"  Prefect UI      {info['prefect_ui']}/runs  (every run: polls and sweeps too)")
    say(f"  Prefect API     {info['prefect_api']}")
    say(f"  Intake          {info['intake']}/alerts/{{source}}  (docs: {info['intake']}/docs)")
    say(
        f"  Sandbox         {info['sandbox']}/_sandbox/...  "
        "(simulated Defender, ServiceNow, Jira, Slack, Teams)"
    )
    say(f"  Intake token    in {settings.home.resolve() / 'intake.token'}")
    say(
        f"  Prefect login   {info['prefect_ui']}/login asks for `{PREFECT_AUTH_USER}:<password>`, "
        f"the password being in {prefect_auth_file(settings)}"
    )
    if samples:
        say(
            f"  Sample alerts   {samples['loaded']} loaded into the simulated Defender; "
            f"{samples['pushed']} pushed through the intake, the rest found by the poll"
        )
    say("  `riposte status --json` prints these URLs. Ctrl-C stops everything.")
    say(f"  Logs            {settings.home.resolve() / 'logs'}")
