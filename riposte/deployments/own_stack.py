"""A Prefect server and a sandbox of a command's own, in a temporary folder, and the inner
process a command runs against them: for `riposte playbook run` (when no local stack runs) and
`riposte replay --stage`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_KEPT_SETTINGS = ("RIPOSTE_PLAYBOOKS", "RIPOSTE_TEMPLATES_DIR", "RIPOSTE_POLICY_FILE",
                  "RIPOSTE_SERVICENOW_BLOCK", "RIPOSTE_JIRA_BLOCK")  # fmt: skip


def _kept_setting(name: str) -> bool:
    """The Riposte settings a temporary stack takes from the caller: what to run (playbooks,
    templates, policy), the names of ticketing blocks (checked against the sandbox's), rate
    budgets, and the sandbox's own configuration."""
    return name in _KEPT_SETTINGS or name.startswith(("RIPOSTE_RATE_", "RIPOSTE_SANDBOX_"))


class OwnStack:
    """A Prefect server and a sandbox in a temporary folder, for one `playbook run` or one
    staging run (``extra_env``: settings of both, such as the sandbox's subscriptions)."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        from riposte.deployments.stack import _port_free

        self.folder = Path(tempfile.mkdtemp(prefix="riposte-playbook-run-"))
        ports = []
        for port in range(4300, 4400):
            if _port_free("127.0.0.1", port):
                ports.append(port)
            if len(ports) == 2:
                break
        self.prefect_port, self.sandbox_port = ports
        self.env = {
            "PREFECT_HOME": str(self.folder / "prefect"),
            "PREFECT_API_URL": f"http://127.0.0.1:{self.prefect_port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.folder / "results"),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "RIPOSTE_HOME": str(self.folder / "riposte"),
            "RIPOSTE_APPROVAL_KEY_FILE": str(self.folder / "approval.key"),
            **(extra_env or {}),
        }
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.nonce = secrets.token_hex(16)
        (self.folder / "stack-nonce").write_text(self.nonce)

    def process_env(self) -> dict[str, str]:
        """The environment of its processes: this machine's, without any Prefect setting or
        Riposte setting that could point them at another server, database, key or URL (a
        production `PREFECT_API_DATABASE_CONNECTION_URL`, `RIPOSTE_APPROVAL_KEYS`...), then
        its own."""
        kept = {
            key: value
            for key, value in os.environ.items()
            if not key.upper().startswith("PREFECT_")
            and (not key.upper().startswith("RIPOSTE_") or _kept_setting(key.upper()))
        }
        return {**kept, **self.env}

    def start(self) -> None:
        import httpx

        py = sys.executable
        env = self.process_env()
        with (self.folder / "prefect.log").open("wb") as log:
            self.processes.append(
                subprocess.Popen(
                    [str(Path(py).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                     "--port", str(self.prefect_port)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            )  # fmt: skip
        with (self.folder / "sandbox.log").open("wb") as log:
            self.processes.append(
                subprocess.Popen(
                    [py, "-m", "riposte.sandbox", "--port", str(self.sandbox_port)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 180
        for url in (f"{self.sandbox_url}/_sandbox/health", f"{self.env['PREFECT_API_URL']}/health"):
            while True:
                if any(p.poll() is not None for p in self.processes):
                    raise RuntimeError(
                        f"the temporary Prefect server or sandbox exited: {self.folder}"
                    )
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not answer in time; logs in {self.folder}")
                time.sleep(0.3)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        shutil.rmtree(self.folder, ignore_errors=True)

    def started(self, command: str) -> bool:
        """Start it; when it does not come up, stop it, say why (``command: reason``) on stderr
        and return False."""
        try:
            self.start()
        except RuntimeError as exc:
            self.stop()
            print(f"{command}: {exc}", file=sys.stderr)
            return False
        return True


def run_inner(module: str, job: dict[str, Any], env: dict[str, str], timeout: int) -> int:
    """Run ``python -m module`` with ``job`` as JSON on its stdin; its exit code (its output is
    the command's)."""
    done = subprocess.run(
        [sys.executable, "-m", module],
        input=json.dumps(job),
        env=env,
        text=True,
        timeout=timeout,
    )
    return done.returncode
