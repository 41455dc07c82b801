"""Scale test: Riposte beyond one machine, with a worker killed in the middle of a burst.

Starts, each on its own free port and in a fresh state folder:
- PostgreSQL (installed from Debian with apt-get when absent; initdb in a temporary folder and
  pg_ctl, no system service), and a Prefect server on it;
- the sandbox, the blocks pointing at it, and a `local-file-system` result storage block that
  every worker shares (RIPOSTE_RESULT_STORAGE_BLOCK);
- `riposte deploy`: the `riposte` process work pool, the rate limits, the lost-run automations
  and every deployment of prefect.yaml;
- two process workers on the pool and two intake replicas.
Then posts a burst of signed alerts alternating between the replicas, SIGKILLs one worker and
every flow-run process it started (a lost machine) in the middle of the burst, waits for the
drain, and checks that every alert was answered exactly once: one ticket and one message each,
no loss, no duplicate. Prints a table; exits 1 on any loss or duplicate, on a run that did not
end Completed, or when something did not finish in its bounded time. Everything it started is
stopped at the end, whatever happened.

This file is the entry point (`make scale-test`); the parts: `scale/postgres.py` (PostgreSQL),
`scale/processes.py` (the supervisor), `scale/load.py` (the stack, the burst, the kill, the
drain), `scale/runs.py` (what Prefect and the workers' logs say), `scale/report.py` (the table).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=300, help="alerts in the burst")
    parser.add_argument("--senders", type=int, default=30, help="concurrent senders")
    parser.add_argument("--worker-limit", type=int, default=4, help="flow runs per worker")
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="share of the burst posted before the kill"
    )
    parser.add_argument(
        "--timeout", type=float, default=540, help="seconds from the first POST to the drain"
    )
    return parser.parse_args(argv)


def main() -> int:
    sys.path.insert(0, str(REPO))  # `python scale/run.py` puts scale/ first, not the repo
    from scale.load import Outcome, run
    from scale.processes import Processes, ScaleTestError, become_subreaper, say, sweep_leftovers
    from scale.report import problems, report

    args = arguments()

    began = time.monotonic()
    state = REPO / ".riposte" / "scale"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    procs = Processes(state / "logs")
    outcome = Outcome(alerts=args.alerts)
    cleanup: list[Callable[[], None]] = []
    become_subreaper()

    def interrupted(signum: int, _: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    failure: str | None = None
    try:
        run(args, procs, outcome, state, cleanup)
    except (ScaleTestError, subprocess.TimeoutExpired, TimeoutError) as exc:
        failure = str(exc)
    except KeyboardInterrupt as exc:
        failure = f"interrupted ({exc})"
    except Exception as exc:  # anything unexpected: still stop everything and say what it was
        traceback.print_exc()
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        say("stopping everything ...")
        procs.stop_all()
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception as exc:
                say(f"cleanup: {exc}")
        sweep_leftovers()
    report(args, outcome, time.monotonic() - began)
    found = problems(args, outcome, failure)
    if found:
        print(f"\nFAILED: {'; '.join(found)} (logs in {procs.logs})")
        return 1
    print(f"\nOK: every alert answered exactly once (logs in {procs.logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
