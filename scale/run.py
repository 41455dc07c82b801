"""Scale test: Riposte as several machines run it, one worker against two, and a worker killed.

Starts, each on its own free port and with its own state folders (as on machines of their own):
- PostgreSQL (installed from Debian with apt-get when absent; initdb in a temporary folder and
  pg_ctl, no system service) and Redis (Debian's redis-server, the same way; prefect-redis is
  installed with pip when absent);
- two Prefect API servers (`prefect server start --no-services`) and the services process
  (`prefect server services start`), on PostgreSQL and on Redis for messaging, event ordering,
  concurrency leases and Docket, as the README's production section describes;
- the sandbox, the blocks pointing at it, and a `local-file-system` result storage block that
  every worker shares (RIPOSTE_RESULT_STORAGE_BLOCK, a shared mount in production); the
  workers' locks are in Redis (RIPOSTE_LOCK_MANAGER);
- `riposte deploy`: the `riposte` process work pool, the rate limits, the lost-run automations
  and every deployment of prefect.yaml;
- two intakes, each on its own API server with its own journal, and the process workers.
Then posts three bursts of signed alerts alternating between the intakes, each drained before
the next: 500 with one worker and 500 with two (the throughput of two against one, on the same
burst), then 1,000 with two, of which one is SIGKILLed, with every flow-run process it started
(a lost machine), in the middle of the burst. Checks that every alert was answered exactly
once: one ticket and one message each, no loss, no duplicate. Prints a table; exits 1 on any
loss or duplicate, on a run that did not end Completed, or when something did not finish in its
bounded time. Everything it started is stopped at the end, whatever happened.

This file is the entry point (`make scale-test`); the parts: `scale/postgres.py` (PostgreSQL),
`scale/redis_server.py` (Redis), `scale/processes.py` (the supervisor), `scale/load.py` (the
stack, the bursts, the kill, the drains), `scale/runs.py` (what Prefect and the workers' logs
say), `scale/report.py` (the table).
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
    parser.add_argument(
        "--alerts", type=int, default=1000, help="alerts in the burst with a worker killed"
    )
    parser.add_argument(
        "--compare-alerts",
        type=int,
        default=500,
        help="alerts in each of the bursts that compare one worker with two",
    )
    parser.add_argument("--senders", type=int, default=30, help="concurrent senders")
    parser.add_argument("--worker-limit", type=int, default=4, help="flow runs per worker")
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="share of the burst posted before the kill"
    )
    parser.add_argument(
        "--timeout", type=float, default=540, help="seconds from a burst's first POST to its drain"
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
    outcome = Outcome()
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
        # A second Ctrl-C or SIGTERM must not cut the cleanup short (Redis and PostgreSQL,
        # started first, are stopped last).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
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
