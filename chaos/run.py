"""`make chaos`: failure scenarios against a local stack of their own, and a table of what came out.

Starts a local stack (Prefect on SQLite, sandbox, intake, responder) on ports 4400/4410/4420 in
a fresh state folder (`.riposte/chaos`), with `chaos/policy.yaml` (every alert gets a ticket and
one message per channel), runs the scenarios of `chaos/scenarios.py` one after another, prints
one row per scenario and exits 1 when any scenario lost or doubled an alert or failed a check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# No prefect import here: the environment must be set before prefect reads its settings.
from riposte.deployments.stack import LocalStack, Process, StackError, stack_env
from riposte.sandbox.driver import stack_environment

REPO = Path(__file__).resolve().parent.parent
FIRST_PORT = 4400  # Prefect; the intake 4410, the sandbox 4420


def configure_environment(home: Path) -> None:
    """Before anything imports prefect: the chaos stack's ports, state folder and policy."""
    # The poll (paused there) and reconcile are run by the scenarios when the design would.
    os.environ.update(stack_environment(home, FIRST_PORT))
    os.environ.update(
        {
            "RIPOSTE_POLICY_FILE": str(REPO / "chaos" / "policy.yaml"),
            "RIPOSTE_DIGEST_PAUSED": "true",
            # A killed responder's locks lapse after 3 minutes rather than 15 (the default), so
            # that sigkill-mid-task's re-runs do not wait a quarter of an hour.
            "RIPOSTE_LOCK_HOLD_SECONDS": "180",
            "RIPOSTE_SYNC_LOCK_HOLD_SECONDS": "30",
        }
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class ChaosStack(LocalStack):
    """The local stack, whose parts can also be stopped and started one by one."""

    def _index(self, name: str) -> int:
        return next(i for i, p in enumerate(self.processes) if p.name == name)

    def _stop(self, name: str, sig: int) -> int:
        index = self._index(name)
        process = self.processes[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, sig)
        try:
            process.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait(timeout=10)
        process.log.close()
        return index

    def _respawn(self, index: int, name: str, argv: list[str]) -> Process:
        # At the same place in the list, so that stop() still stops the parts in order.
        process = self._spawn(name, argv, stack_env(self.settings))
        self.processes.remove(process)
        self.processes[index] = process
        return process

    def restart_prefect(self, down_seconds: float) -> None:
        s = self.settings
        index = self._stop("prefect-server", signal.SIGTERM)
        time.sleep(down_seconds)
        argv = [
            str(Path(sys.executable).parent / "prefect"),
            *("server", "start", "--host", s.host, "--port", str(s.prefect_port)),
        ]
        server = self._respawn(index, "prefect-server", argv)
        self._wait_for(server, f"{s.prefect_api_url}/health", 180)

    def kill_responder(self) -> None:
        self._stop("served-flows", signal.SIGKILL)

    def start_responder(self) -> None:
        index = self._index("served-flows")
        if self.processes[index].popen.poll() is None:
            raise StackError("the responder is still running")
        served = self._respawn(
            index, "served-flows", [sys.executable, "-m", "riposte.deployments.serve"]
        )
        self._wait_for_deployments(served, 120)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))  # `python chaos/run.py` puts chaos/ first, not the repo
    from chaos.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--alerts", type=int, default=100, help="alerts per burst")
    parser.add_argument("--outage", type=float, default=120, help="itsm-down: seconds of 503")
    parser.add_argument("--down", type=float, default=60, help="prefect-restart: seconds down")
    parser.add_argument("--lag", type=float, default=30, help="search-lag: seconds Jira lags")
    parser.add_argument(
        "--retry-rounds",
        type=int,
        default=3,
        help="times retry-failed runs when no scenario is named (a rare race needs several)",
    )
    args = parser.parse_args(argv)
    # retry-failed's race (two runs of one alert at once) shows rarely: by default it runs
    # `--retry-rounds` times in a row.
    chosen = args.scenarios or list(SCENARIOS) + ["retry-failed"] * (args.retry_rounds - 1)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")

    home = REPO / ".riposte" / "chaos"
    shutil.rmtree(home, ignore_errors=True)
    configure_environment(home)

    from chaos.harness import Harness, ScenarioResult, table
    from riposte.settings import get_settings

    stack = ChaosStack(get_settings(), say=say)
    started = time.monotonic()
    results: list[ScenarioResult] = []
    try:
        stack.start()
        settings = stack.settings
        harness = Harness(
            intake_url=settings.intake_url,
            sandbox_url=settings.sandbox_url,
            token=stack.intake_token(),
            prefect_cli=str(Path(sys.executable).parent / "prefect"),
            say=say,
            stack=stack,
            reset_sandbox=True,
        )
        params = {
            "itsm-down": {"alerts": args.alerts, "outage": args.outage},
            "prefect-restart": {"alerts": args.alerts, "down": args.down},
            "search-lag": {"alerts": args.alerts, "lag": args.lag},
            # 50 tickets resolved while Defender answers 503 for a minute.
            "ticket-sync": {"alerts": 50, "outage": 60.0},
        }
        for name in chosen:
            say(f"--- {name}")
            try:
                results.append(
                    SCENARIOS[name](harness, **params.get(name, {"alerts": args.alerts}))
                )
            except Exception as exc:  # a scenario that cannot run is a failed scenario
                failed = ScenarioResult(name, sent=args.alerts)
                failed.problems.append(f"could not run: {type(exc).__name__}: {exc}")
                results.append(failed)
                say(f"[{name}] could not run: {type(exc).__name__}: {exc}")
    finally:
        stack.stop()
    elapsed = time.monotonic() - started

    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    print(table(results))
    print(f"total {elapsed:.0f} s")
    for r in results:
        for line in r.problems:
            print(f"- {r.scenario}: FAILED CHECK: {line}")
        for line in r.notes:
            print(f"- {r.scenario}: {line}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
