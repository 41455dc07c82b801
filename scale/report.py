"""The scale test's report: the table of what it saw, and the verdict (what counts as a failure)."""

from __future__ import annotations

import argparse
import os
import platform

from scale.load import LOST_RUN_SECONDS, Outcome


def report(args: argparse.Namespace, outcome: Outcome, total: float) -> None:
    in_flight = sum(len(v) for v in outcome.in_flight.values())
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}; Prefect server on PostgreSQL, 2 process workers "
        f"(limit {args.worker_limit} runs each), 2 intake replicas"
    )
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| alerts posted (signed, alternating replicas) | {outcome.alerts} |")
    print(f"| tickets | {outcome.tickets} |")
    print(f"| duplicate tickets | {outcome.duplicates} |")
    print(f"| lost alerts (no ticket) | {outcome.lost} |")
    print(f"| messages / duplicates | {outcome.messages} / {outcome.duplicate_messages} |")
    print(
        f"| all alerts posted (intake answers) after | {outcome.all_posted_after:.1f} s "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(outcome.statuses.items()))}) |"
    )
    print(
        f"| worker killed (SIGKILL, with its flow-run processes) | {outcome.killed_worker} at "
        f"{outcome.killed_at:.1f} s, {in_flight} run(s) in flight "
        f"({', '.join(f'{k}: {len(v)}' for k, v in outcome.in_flight.items())}), "
        f"{outcome.steps_done_before_kill} step(s) done in them |"
    )
    print(
        f"| in-flight runs marked Crashed (no heartbeat for {LOST_RUN_SECONDS} s), then run "
        f"again to Completed by the other worker | {outcome.recovered} of "
        f"{in_flight - outcome.finished_at_kill}"
        + (
            f" ({outcome.finished_at_kill} had completed as the worker was frozen)"
            if outcome.finished_at_kill
            else ""
        )
        + ", "
        f"{outcome.steps_cached_in_rerun} step(s) Cached in the re-runs |"
    )
    for name, count in sorted(outcome.runs_per_worker.items()):
        print(f"| flow runs run by {name} | {count} |")
    print(
        f"| response runs by final state | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(outcome.run_states.items()))} |"
    )
    print(f"| last ticket after | {outcome.last_ticket_after:.1f} s |")
    drained = f"{outcome.drained_after:.1f} s" if outcome.complete else "NOT DRAINED"
    print(f"| drain time (first POST -> all answered, all runs finished) | {drained} |")
    print(f"| whole test | {total:.0f} s |")
    ours = sum(outcome.cpu.values())
    parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(outcome.cpu.items(), key=lambda kv: -kv[1]))
    print(f"| CPU seconds by part | {parts} |")
    print(
        f"| machine CPU busy during the test | {outcome.machine_busy:.0f} s, of which this test "
        f"{ours:.0f} s (the rest: other work on the machine) |"
    )


def problems(args: argparse.Namespace, outcome: Outcome, failure: str | None) -> list[str]:
    """What fails the test: ``failure`` (a part that did not start or finish), no drain, a lost
    or doubled alert or message, a run in flight at the kill not recovered, a run not Completed."""
    found = []
    if failure:
        found.append(failure)
    if not outcome.complete:
        found.append(f"not drained within {args.timeout:.0f}s of the first POST")
    if outcome.lost or outcome.duplicates:
        found.append(f"{outcome.lost} lost, {outcome.duplicates} duplicate ticket(s)")
    if outcome.messages != outcome.alerts or outcome.duplicate_messages:
        found.append(
            f"{outcome.messages} messages for {outcome.alerts} alerts "
            f"({outcome.duplicate_messages} duplicates)"
        )
    in_flight = sum(len(v) for v in outcome.in_flight.values()) - outcome.finished_at_kill
    if not failure and (in_flight <= 0 or outcome.recovered < in_flight):
        found.append(
            f"{outcome.recovered} of the {in_flight} runs in flight at the kill were recovered"
        )
    if outcome.not_completed:
        found.append(f"runs not Completed: {', '.join(outcome.not_completed[:10])}")
    return found
