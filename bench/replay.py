"""The simulated replay of 10,000 alerts: how long `riposte replay` takes, end to end.

Writes a week of past alerts of all four sources (`riposte.sandbox.history`: every sandbox
sample again and again, each copy with its own id and every few its own incident) as one NDJSON
file per source in a temporary folder, then runs `riposte replay FOLDER --json` as a user would
(a new process: imports, reading, parsing, the policy's decisions and the playbooks' code), with
the default policy and then with `--against` a candidate policy (two replays and a comparison).
Prints the wall time of each, the peak memory of the process, and the report's main figures.

A benchmark, not a test: it asserts nothing. The target is under 30 s for 10,000 alerts on the
2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CANDIDATE = REPO / "tests" / "fixtures" / "replay" / "candidate.yaml"


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, object]]:
    """Wall seconds, peak RSS in MiB of the child, and its JSON output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "riposte.deployments.cli", "replay", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode not in (0, 1):
        print(done.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"riposte replay exited {done.returncode}")
    return seconds, max(peak, before) / 1024, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=7.0)
    args = parser.parse_args()
    from riposte.sandbox.history import history

    env = {k: v for k, v in os.environ.items() if k != "RIPOSTE_POLICY_FILE"}
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # unreachable: the replay needs none
    with tempfile.TemporaryDirectory(prefix="riposte-bench-replay-") as folder:
        made = history(args.alerts, datetime.now(UTC), days=args.days)
        size = 0
        for source, payloads in made.items():
            path = Path(folder) / f"{source}.ndjson"
            path.write_text("".join(json.dumps(p) + "\n" for p in payloads))
            size += path.stat().st_size
        counts = ", ".join(f"{s} {len(p)}" for s, p in made.items())
        print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
              f"{platform.python_version()}")  # fmt: skip
        print(f"alerts: {sum(len(p) for p in made.values())} ({counts}), "
              f"{size / 2**20:.1f} MiB of NDJSON over {args.days:g} days")  # fmt: skip
        one, peak_one, single = run([folder], env)
        two, peak_two, compared = run([folder, "--against", str(CANDIDATE)], env)
    report = single["report"]
    totals = report["totals"]  # type: ignore[index]
    noise = report["noise"]  # type: ignore[index]
    print()
    print("| replay | wall s | peak RSS MiB | alerts/s |")
    print("|---|---|---|---|")
    print(f"| default policy | {one:.1f} | {peak_one:.0f} | {totals['alerts'] / one:.0f} |")
    print(f"| default policy --against candidate | {two:.1f} | {peak_two:.0f} | "
          f"{2 * totals['alerts'] / two:.0f} |")  # fmt: skip
    print()
    print(
        f"default policy: {totals['tickets']} tickets ({noise['tickets_per_100_alerts']} per 100 "
        f"alerts), {totals['notes']} notes, {totals['messages']} messages, {totals['pages']} "
        f"pages ({noise['pages_per_day']} per day), {totals['digest_entries']} digest entries, "
        f"{totals['containments']} containment requests, busiest entity "
        f"{noise['busiest_entity']} ({noise['busiest_entity_alerts']} alerts), "
        f"{totals['errors']} errors, {len(report['skipped'])} skipped"  # type: ignore[arg-type]
    )
    print(f"candidate: {compared['changed']} alerts treated differently")
    verdict = "met" if one < 30 else "NOT met"
    print(f"target: 10,000 alerts under 30 s: {verdict} ({one:.1f} s)")


if __name__ == "__main__":
    main()
