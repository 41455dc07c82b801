"""The scale test's load: its parts started, a burst of signed alerts, a worker killed, the drain.

`run` starts PostgreSQL, Prefect on it, the sandbox, `riposte deploy`, two workers and two
intake replicas; posts the burst alternating between the replicas; SIGKILLs the worker with the
most progress and its flow-run processes in the middle of it; then waits for the drain. What it
sees goes into an `Outcome`, which `scale/report.py` prints and judges.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riposte.sandbox.driver import AlertSender, SandboxClient, correlation, graph_alerts
from scale.postgres import Postgres, ensure_asyncpg, ensure_postgres_installed
from scale.processes import (
    REPO,
    Processes,
    ScaleTestError,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    say,
    wait_until,
)
from scale.runs import (
    alerts_of,
    choose_victim,
    claimed_runs,
    flow_run_states,
    online_workers,
    pause_schedules,
    response_runs,
    runs_in_flight,
    steps_in_log,
)

BIN = Path(sys.executable).parent
RESULTS_BLOCK = "riposte-scale-results"
# Heartbeats every 30 s (prefect.yaml), a run silent for 90 s is lost; locks of a killed run
# lapse after 60 s, before its run is given back, so the re-run never waits for a dead holder.
LOST_RUN_SECONDS = 90
LOCK_HOLD_SECONDS = 60
# The sandbox does not rate-limit like the vendors: the test measures Riposte, not budgets.
GENEROUS_RATE = "100/s"
RATE_APIS = ("graph", "mde", "mdebatch", "mdca", "arm", "servicenow", "jira", "slack", "teams")


def make_alerts(count: int) -> list[dict[str, Any]]:
    run_tag = secrets.token_hex(3)
    return graph_alerts([f"scale-{run_tag}-{i:05d}" for i in range(count)], 700000)


def messages_per_alert(sandbox: SandboxClient, alert_ids: list[str]) -> Counter[str]:
    """How many Slack messages name each alert."""
    found: Counter[str] = Counter()
    for message in sandbox.chat_messages("slack"):
        # A message names its alert several times (text, links): count it once.
        found.update(set(re.findall(r"scale-[0-9a-f]{6}-\d{5}", json.dumps(message))))
    wanted = set(alert_ids)
    return Counter({k: v for k, v in found.items() if k in wanted})


@dataclass
class Outcome:
    """What the test saw, filled in as it goes; `scale/report.py` prints and judges it."""

    alerts: int
    tickets: int = 0
    duplicates: int = 0
    lost: int = 0
    messages: int = 0
    duplicate_messages: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    last_ticket_after: float = float("nan")
    drained_after: float = float("nan")
    killed_at: float = float("nan")
    killed_worker: str = ""
    killed_processes: int = 0
    in_flight: dict[str, list[str]] = field(default_factory=dict)
    runs_per_worker: dict[str, int] = field(default_factory=dict)
    run_states: dict[str, int] = field(default_factory=dict)
    not_completed: list[str] = field(default_factory=list)
    complete: bool = False
    all_posted_after: float = float("nan")
    steps_done_before_kill: int = 0
    recovered: int = 0
    # Read Running as the worker was frozen, though its Completed state (sent just before) had
    # reached the server: it finished, nothing to recover.
    finished_at_kill: int = 0
    steps_cached_in_rerun: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = float("nan")


def environment(state: Path, prefect_port: int, sandbox_port: int, hmac_key: str) -> dict[str, str]:
    """What every process of the test shares (a worker machine's environment, in production)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RIPOSTE_"))} | {
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(state / "default-results"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "RIPOSTE_HOME": str(state / "riposte"),
        "RIPOSTE_HOST": "127.0.0.1",
        "RIPOSTE_PREFECT_PORT": str(prefect_port),
        "RIPOSTE_SANDBOX_PORT": str(sandbox_port),
        "RIPOSTE_POLICY_FILE": str(REPO / "scale" / "policy.yaml"),
        "RIPOSTE_POLL_SOURCES": "graph",
        "RIPOSTE_RESULT_STORAGE_BLOCK": f"local-file-system/{RESULTS_BLOCK}",
        "RIPOSTE_LOCK_HOLD_SECONDS": str(LOCK_HOLD_SECONDS),
        "RIPOSTE_LOST_RUN_SECONDS": str(LOST_RUN_SECONDS),
        "RIPOSTE_INTAKE_HMAC_KEYS": hmac_key,
    }
    env |= {f"RIPOSTE_RATE_{api.upper()}": GENEROUS_RATE for api in RATE_APIS}
    return env


def run(
    args: argparse.Namespace,
    procs: Processes,
    outcome: Outcome,
    state: Path,
    cleanup: list[Callable[[], None]],
) -> None:
    pg_port, prefect_port, sandbox_port = free_port(), free_port(), free_port()
    intake_ports = [free_port(), free_port()]
    hmac_key = secrets.token_urlsafe(32)
    env = environment(state, prefect_port, sandbox_port, hmac_key)
    # This process talks to the same Prefect; set before the first import of prefect.
    os.environ.update(env)

    busy_at_start = machine_busy_seconds()
    bindir = ensure_postgres_installed()
    say(ensure_asyncpg())
    postgres = Postgres(bindir, pg_port)
    cleanup.append(postgres.stop)
    postgres.start()
    say(f"PostgreSQL {bindir.parent.name} on port {pg_port} ({postgres.folder})")

    prefect = str(BIN / "prefect")
    server = procs.spawn(
        "prefect-server",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        env | {"PREFECT_API_DATABASE_CONNECTION_URL": postgres.url},
    )
    sandbox_proc = procs.spawn(
        "sandbox",
        [sys.executable, "-m", "riposte.sandbox", "--host", "127.0.0.1"]
        + ["--port", str(sandbox_port)],
        env,
    )
    procs.wait_http(sandbox_proc, f"http://127.0.0.1:{sandbox_port}/_sandbox/health", 60)
    procs.wait_http(server, f"http://127.0.0.1:{prefect_port}/api/health", 240)
    say(f"Prefect server on PostgreSQL at port {prefect_port}")

    from prefect.filesystems import LocalFileSystem

    from riposte.deployments.local import save_sandbox_blocks

    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    save_sandbox_blocks(sandbox_url)
    LocalFileSystem(basepath=str(state / "results")).save(RESULTS_BLOCK, overwrite=True)

    deploy_log = procs.logs / "riposte-deploy.log"
    with deploy_log.open("wb") as log:
        code = subprocess.call(
            [str(BIN / "riposte"), "deploy", "--prefect-file", str(REPO / "prefect.yaml")],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    if code != 0:
        raise ScaleTestError(f"riposte deploy exited {code}; see {deploy_log}")
    say(f"riposte deploy: pool, limits, automations, deployments; paused {pause_schedules()}")

    workers = [
        procs.spawn(
            f"worker-{n}",
            [prefect, "worker", "start", "--pool", "riposte", "--type", "process"]
            + ["--name", f"scale-worker-{n}", "--limit", str(args.worker_limit)],
            env,
        )
        for n in (1, 2)
    ]
    intakes = [
        procs.spawn(
            f"intake-{n}",
            [sys.executable, "-m", "riposte.deployments.intake"],
            # Each intake has its own journal, as on its own machine.
            env
            | {
                "RIPOSTE_INTAKE_PORT": str(port),
                "RIPOSTE_INTAKE_JOURNAL": str(state / f"intake-{n}" / "journal"),
            },
        )
        for n, port in enumerate(intake_ports, 1)
    ]
    intake_urls = [f"http://127.0.0.1:{port}" for port in intake_ports]
    for proc, url in zip(intakes, intake_urls, strict=True):
        procs.wait_http(proc, f"{url}/health", 90)
    wait_until("two workers online in pool riposte", lambda: online_workers() >= 2, 120, 1)
    say(f"2 workers on pool riposte, 2 intakes at {', '.join(intake_urls)}")

    sandbox = SandboxClient(sandbox_url)
    alerts = make_alerts(args.alerts)
    sandbox.load(alerts)
    ids = [a["id"] for a in alerts]
    # Each alert signed, to replica index % 2, like a sender that honours 503 and Retry-After
    # (5 s at most) and retries timeouts, 20 tries at most.
    burst = AlertSender(
        intake_urls,
        hmac_key=hmac_key,
        tries=20,
        pause_after_error=1,
        most_retry_after=5,
        timeout=60,
    )
    say(f"burst: {args.alerts} signed alerts from {args.senders} senders, both replicas ...")

    started = time.monotonic()
    pool = ThreadPoolExecutor(args.senders)
    try:
        futures = [pool.submit(burst.post, a, i) for i, a in enumerate(alerts)]
        kill_after = int(args.alerts * args.kill_at)
        wait_until("half the burst posted", lambda: burst.posted >= kill_after, args.timeout)
        victim = choose_victim(workers, timeout=60)
        outcome.cpu[victim.name] = cpu_seconds(victim.popen.pid)
        frozen = procs.freeze_tree(victim)
        in_flight = runs_in_flight(victim)
        procs.kill_frozen(victim, frozen)
        kill_time = time.time()
        outcome.killed_at = time.monotonic() - started
        outcome.killed_worker = victim.name
        outcome.killed_processes = len(frozen)
        outcome.in_flight = {state: [str(r.id) for r in runs] for state, runs in in_flight.items()}
        flight_alerts = {str(r.id): alerts_of(r) for runs in in_flight.values() for r in runs}
        for run_alerts in flight_alerts.values():
            outcome.steps_done_before_kill += steps_in_log(victim.log_path, run_alerts)["Completed"]
        say(
            f"SIGKILLed {victim.name} and its {len(frozen)} flow-run process(es) after "
            f"{burst.posted} posts; its runs in flight: "
            f"{ {state: len(runs) for state, runs in in_flight.items()} }, "
            f"{outcome.steps_done_before_kill} step(s) done in them"
        )
        for future in futures:
            future.result(timeout=max(1.0, args.timeout - (time.monotonic() - started)))
    finally:
        burst.stopped = True  # a failure above: the senders give up at their next retry
        pool.shutdown(wait=True, cancel_futures=True)
    outcome.all_posted_after = burst.last_post - started
    outcome.statuses = dict(burst.statuses)
    say(f"all posted after {outcome.all_posted_after:.1f}s: statuses {outcome.statuses}")

    drain(args, outcome, sandbox, ids, started)
    outcome.machine_busy = machine_busy_seconds() - busy_at_start
    for proc in procs.started:
        if proc.alive():
            outcome.cpu[proc.name] = cpu_seconds(proc.popen.pid)
    with contextlib.suppress(OSError, ValueError):
        postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
        outcome.cpu["postgres"] = cpu_seconds(postmaster)
    own = os.times()
    outcome.cpu["scale/run.py (senders, checks)"] = own.user + own.system
    outcome.runs_per_worker = {w.name: claimed_runs(w.log_path).total() for w in workers}
    for run_id, run_alerts in flight_alerts.items():
        others = [w for w in workers if w is not victim and claimed_runs(w.log_path)[run_id]]
        states = flow_run_states(run_id)
        history = ", ".join(f"{name} {at - kill_time:+.0f}s" for name, at in states)
        cached = sum(steps_in_log(w.log_path, run_alerts)["Cached"] for w in others)
        say(
            f"  in-flight run {run_id} ({len(run_alerts)} alert(s)): {history} (from the kill); "
            f"run again by {[w.name for w in others]}, {cached} step(s) Cached"
        )
        names = [name for name, _ in states]
        if "Crashed" in names and names[-1] == "Completed" and others:
            outcome.recovered += 1
        elif names[-1:] == ["Completed"] and "Crashed" not in names:
            outcome.finished_at_kill += states[-1][1] <= kill_time + 1.0
        outcome.steps_cached_in_rerun += cached


def drain(
    args: argparse.Namespace,
    outcome: Outcome,
    sandbox: SandboxClient,
    ids: list[str],
    started: float,
) -> None:
    """Wait (bounded) until every alert has its ticket and every response run has finished; a
    Crashed run that the automation will run again is not finished."""
    from riposte.deployments.rollout import CRASH_RERUNS

    keys = {correlation(i) for i in ids}
    deadline = started + args.timeout
    have = 0
    while time.monotonic() < deadline:
        tickets = sandbox.tickets()
        count = sum(1 for k in keys if tickets[k])
        if count > have:
            have = count
            outcome.last_ticket_after = time.monotonic() - started
        if count == len(keys):
            runs = response_runs()
            open_runs = [
                r
                for r in runs
                if r.state is None
                or not r.state.is_final()
                or (r.state.is_crashed() and r.run_count <= CRASH_RERUNS)
            ]
            if not open_runs:
                outcome.drained_after = time.monotonic() - started
                outcome.complete = True
                break
        time.sleep(1)
    time.sleep(3)  # anything still in flight would show now
    tickets = sandbox.tickets()
    messages = messages_per_alert(sandbox, ids)
    outcome.tickets = sum(tickets[k] for k in keys)
    outcome.lost = sum(1 for k in keys if not tickets[k])
    outcome.duplicates = sum(tickets[k] - 1 for k in keys if tickets[k] > 1)
    outcome.messages = sum(messages.values())
    outcome.duplicate_messages = sum(n - 1 for n in messages.values() if n > 1)
    runs = response_runs()
    outcome.run_states = dict(Counter(r.state.name if r.state else "none" for r in runs))
    outcome.not_completed = [
        f"{r.name} {r.state.name if r.state else 'none'}"
        for r in runs
        if r.state is None or not r.state.is_completed()
    ]
