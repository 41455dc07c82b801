"""The scale test's report: the table of what it saw, and the verdict (what counts as a failure)."""

from __future__ import annotations

import argparse
import os
import platform

from scale.load import LOST_RUN_SECONDS, Outcome, Phase
from scale.redis_server import MESSAGING_DB

# The target for two workers against one, on the same burst. Reported, not a failure of
# the test: on one machine every part shares its cores, and a worker brings none of its own.
SCALE_TARGET = 1.6
# The parts that are Prefect and its stores (the "server" of a CPU-per-alert figure).
SERVER_PARTS = ("prefect-api-1", "prefect-api-2", "prefect-services", "postgres", "redis")


def _ms_per_alert(phase: Phase, names: list[str]) -> float:
    return 1000 * sum(phase.cpu.get(n, 0.0) for n in names) / phase.alerts


def _statuses(phase: Phase) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(phase.statuses.items()))


def _workers(phase: Phase) -> list[str]:
    return [n for n in phase.cpu if n.startswith("worker")]


def report(args: argparse.Namespace, outcome: Outcome, total: float) -> None:
    phases = outcome.phases
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}; 2 Prefect API servers (--no-services) and the services "
        f"process on PostgreSQL and Redis; process workers (limit {args.worker_limit} runs "
        f"each), 2 intakes, each part with its own state folders"
    )
    if not phases:
        print("\nno burst was posted")
        return
    print()
    print("| measure | " + " | ".join(p.name for p in phases) + " |")
    print("|---|" + "---|" * len(phases))

    def row(label: str, cells: list[str]) -> None:
        print(f"| {label} | " + " | ".join(cells) + " |")

    row("alerts posted (signed, alternating intakes)", [str(p.alerts) for p in phases])
    row(
        "all posted (intake answers) after",
        [f"{p.posted_after:.1f} s ({_statuses(p)})" for p in phases],
    )
    row("last ticket after (from the first POST)", [f"{p.last_ticket_after:.1f} s" for p in phases])
    row("throughput", [f"{p.throughput:.2f} alerts/s" for p in phases])
    row(
        "drain (all answered, all runs finished)",
        [f"{p.drained_after:.1f} s" if p.complete else "NOT DRAINED" for p in phases],
    )
    row(
        "machine CPU busy, first POST to drain (all cores, any process)",
        [f"{100 * p.machine_share:.0f}%" for p in phases],
    )
    row("lost / duplicate tickets", [f"{p.lost} / {p.duplicates}" for p in phases])
    row(
        "messages / duplicates",
        [f"{p.messages} / {p.duplicate_messages}" for p in phases],
    )
    row("most step locks held in Redis (read once a second)", [str(p.most_locks) for p in phases])
    workers = sorted({w for p in phases for w in p.shares})
    for worker in workers:
        row(
            f"{worker}: flow runs, alerts in them",
            [
                f"{p.shares[worker][0]}, {p.shares[worker][1]}" if worker in p.shares else "-"
                for p in phases
            ],
        )
    parts = sorted({n for p in phases for n in p.cpu}, key=lambda n: (n.startswith("worker"), n))
    for name in parts:
        row(f"CPU ms per alert: {name}", [f"{_ms_per_alert(p, [name]):.0f}" for p in phases])
    row(
        "CPU ms per alert: workers + Prefect (API servers, services, PostgreSQL, Redis)",
        [f"{_ms_per_alert(p, [*_workers(p), *SERVER_PARTS]):.0f}" for p in phases],
    )
    row("CPU ms per alert: everything", [f"{_ms_per_alert(p, list(p.cpu)):.0f}" for p in phases])
    one, two = outcome.phase("one worker"), outcome.phase("two workers")
    print()
    if one and two and one.throughput:
        ratio = two.throughput / one.throughput
        verdict = "met" if ratio >= SCALE_TARGET else "NOT MET (reported, not a test failure)"
        print(
            f"two workers / one: {ratio:.2f}x the throughput ({two.throughput:.2f} against "
            f"{one.throughput:.2f} alerts/s; target {SCALE_TARGET}x: {verdict})"
        )
    in_flight = sum(len(v) for v in outcome.in_flight.values())
    print(
        f"worker killed (SIGKILL, with its flow-run processes): {outcome.killed_worker} at "
        f"{outcome.killed_at:.1f} s, {in_flight} run(s) in flight "
        f"({', '.join(f'{k}: {len(v)}' for k, v in outcome.in_flight.items())}), "
        f"{outcome.steps_done_before_kill} task run(s) finished in them (an alert each in a "
        "batch)"
    )
    print(
        f"in-flight runs marked Crashed (no heartbeat for {LOST_RUN_SECONDS} s), then run again "
        f"to Completed by the other worker: {outcome.recovered} of "
        f"{in_flight - outcome.finished_at_kill}"
        + (
            f" ({outcome.finished_at_kill} had completed as the worker was frozen)"
            if outcome.finished_at_kill
            else ""
        )
        + f", {outcome.steps_cached_in_rerun} step(s) found done (Cached) in the re-runs"
    )
    print(
        "response runs by final state: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(outcome.run_states.items()))
    )
    print(
        f"Redis: {outcome.redis_commands} commands processed; keys by database "
        f"{dict(sorted(outcome.redis_keys.items()))} (0: messaging, 1: Docket, 2: locks)"
    )
    ours = sum(outcome.cpu.values())
    everything = ", ".join(
        f"{k} {v:.0f}" for k, v in sorted(outcome.cpu.items(), key=lambda kv: -kv[1])
    )
    print(f"CPU seconds by part, whole test: {everything}")
    print(
        f"machine CPU busy during the test: {outcome.machine_busy:.0f} s, of which this test "
        f"{ours:.0f} s (the rest: other work on the machine); whole test {total:.0f} s"
    )


def problems(args: argparse.Namespace, outcome: Outcome, failure: str | None) -> list[str]:
    """What fails the test: ``failure`` (a part that did not start or finish), a burst not
    drained, a lost or doubled alert or message, a run in flight at the kill not recovered, a
    run not Completed."""
    found = []
    if failure:
        found.append(failure)
    for p in outcome.phases:
        if not p.complete:
            found.append(f"{p.name}: not drained within {args.timeout:.0f}s of the first POST")
        if p.lost or p.duplicates:
            found.append(f"{p.name}: {p.lost} lost, {p.duplicates} duplicate ticket(s)")
        if p.messages != p.alerts or p.duplicate_messages:
            found.append(
                f"{p.name}: {p.messages} messages for {p.alerts} alerts "
                f"({p.duplicate_messages} duplicates)"
            )
    in_flight = sum(len(v) for v in outcome.in_flight.values()) - outcome.finished_at_kill
    if not failure and (in_flight <= 0 or outcome.recovered < in_flight):
        found.append(
            f"{outcome.recovered} of the {in_flight} runs in flight at the kill were recovered"
        )
    if not failure and not any(p.most_locks for p in outcome.phases):
        found.append("no step lock was ever seen in Redis: are the workers using it?")
    if not failure and not outcome.redis_keys.get(MESSAGING_DB):
        found.append("Redis holds no messaging keys: are the Prefect servers using it?")
    if outcome.not_completed:
        found.append(f"runs not Completed: {', '.join(outcome.not_completed[:10])}")
    return found
