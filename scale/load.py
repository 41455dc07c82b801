"""The scale test's load: the stack, three bursts of signed alerts, a worker killed, the drains.

`start_stack` starts PostgreSQL, Redis, two Prefect API servers and the services process on them,
the sandbox, `riposte deploy` and two intakes (one per API server); each part has its own state
folders, as on machines of their own, and shares only what production shares (the database,
Redis, the result storage). `run` then posts three bursts, alternating between the intakes: with
one worker, with two (the throughput of one against two, on the same burst), and with two of
which one is SIGKILLed with its flow-run processes in the middle; each burst is drained before
the next. What it sees goes into an `Outcome`, which `scale/report.py` prints and judges.
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
from uuid import UUID

from riposte.sandbox.driver import AlertSender, SandboxClient, correlation, graph_alerts
from scale.postgres import Postgres, ensure_asyncpg, ensure_postgres_installed
from scale.processes import (
    REPO,
    Proc,
    Processes,
    ScaleTestError,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    say,
    wait_until,
)
from scale.redis_server import (
    LOCKS_DB,
    ensure_prefect_redis,
    ensure_redis_installed,
    locks_held,
    prefect_redis_environment,
    redis_use,
    start_redis,
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
class Phase:
    """One burst of the test and what it cost: its drain, each part's CPU, each worker's share."""

    name: str
    alerts: int
    posted_after: float = float("nan")
    statuses: dict[int, int] = field(default_factory=dict)
    last_ticket_after: float = float("nan")
    drained_after: float = float("nan")
    complete: bool = False
    lost: int = 0
    duplicates: int = 0
    messages: int = 0
    duplicate_messages: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    # The machine's CPU use from the first POST to the drain, of the cores this test may use
    # (any process: other work on the machine counts too).
    machine_share: float = float("nan")
    # The most step locks Redis held, read once a second during the drain (a lower bound).
    most_locks: int = 0
    # Per worker: (flow runs, alerts in them); a run claimed twice (a crash) counts for each.
    shares: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Alerts answered per second, from the first POST to the last ticket."""
        return self.alerts / self.last_ticket_after if self.last_ticket_after > 0 else 0.0


@dataclass
class Outcome:
    """What the test saw, filled in as it goes; `scale/report.py` prints and judges it."""

    phases: list[Phase] = field(default_factory=list)
    killed_at: float = float("nan")
    killed_worker: str = ""
    killed_processes: int = 0
    in_flight: dict[str, list[str]] = field(default_factory=dict)
    run_states: dict[str, int] = field(default_factory=dict)
    not_completed: list[str] = field(default_factory=list)
    steps_done_before_kill: int = 0
    recovered: int = 0
    # Read Running as the worker was frozen, though its Completed state (sent just before) had
    # reached the server: it finished, nothing to recover.
    finished_at_kill: int = 0
    steps_cached_in_rerun: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = float("nan")
    redis_commands: int = 0
    redis_keys: dict[int, int] = field(default_factory=dict)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


def own_state(state: Path, name: str) -> dict[str, str]:
    """A process's own state folders, as on a machine of its own: Prefect's home and local
    results, Riposte's home (and so its file locks, had it no Redis)."""
    for folder in ("prefect", "default-results", "riposte"):
        (state / name / folder).mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(state / name / "prefect"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(state / name / "default-results"),
        "RIPOSTE_HOME": str(state / name / "riposte"),
    }


def environment(
    state: Path, api_port: int, sandbox_port: int, redis_port: int, hmac_key: str
) -> dict[str, str]:
    """What every process of the test shares (a worker machine's environment, in production),
    with this process's own state folders; `own_state` replaces them for each of the others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RIPOSTE_"))} | {
        "PREFECT_API_URL": f"http://127.0.0.1:{api_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "RIPOSTE_HOST": "127.0.0.1",
        "RIPOSTE_PREFECT_PORT": str(api_port),
        "RIPOSTE_SANDBOX_PORT": str(sandbox_port),
        "RIPOSTE_POLICY_FILE": str(REPO / "scale" / "policy.yaml"),
        "RIPOSTE_POLL_SOURCES": "graph",
        # The one state the workers share, as production does: result storage and locks.
        "RIPOSTE_RESULT_STORAGE_BLOCK": f"local-file-system/{RESULTS_BLOCK}",
        "RIPOSTE_LOCK_MANAGER": f"redis://127.0.0.1:{redis_port}/{LOCKS_DB}",
        "RIPOSTE_LOCK_HOLD_SECONDS": str(LOCK_HOLD_SECONDS),
        "RIPOSTE_LOST_RUN_SECONDS": str(LOST_RUN_SECONDS),
        "RIPOSTE_INTAKE_HMAC_KEYS": hmac_key,
    }
    env |= own_state(state, "scale-run")
    env |= {f"RIPOSTE_RATE_{api.upper()}": GENEROUS_RATE for api in RATE_APIS}
    return env


@dataclass
class Stack:
    """What `start_stack` started and what the phases use."""

    env: dict[str, str]
    api_urls: list[str]
    sandbox: SandboxClient
    intake_urls: list[str]
    hmac_key: str
    redis_port: int
    parts: dict[str, int]  # name -> pid, for CPU accounting (postgres: the postmaster)
    workers: list[Proc] = field(default_factory=list)


def start_stack(
    procs: Processes, state: Path, cleanup: list[Callable[[], None]], redis_port: int
) -> Stack:
    """PostgreSQL; Redis; two Prefect API servers (`--no-services`) and the services process,
    all on both; the sandbox, the blocks, `riposte deploy`; two intakes, one per API server,
    each with its own journal and state. Workers are started by the phases."""
    pg_port, sandbox_port = free_port(), free_port()
    api_ports = [free_port(), free_port()]
    hmac_key = secrets.token_urlsafe(32)
    env = environment(state, api_ports[0], sandbox_port, redis_port, hmac_key)
    # This process talks to the first API server; set before the first import of prefect.
    os.environ.update(env)

    bindir = ensure_postgres_installed()
    say(ensure_asyncpg())
    postgres = Postgres(bindir, pg_port)
    cleanup.append(postgres.stop)
    postgres.start()
    say(f"PostgreSQL {bindir.parent.name} on port {pg_port} ({postgres.folder})")
    redis_proc = start_redis(procs, ensure_redis_installed(), redis_port, state / "redis")
    say(f"{ensure_prefect_redis()}; redis-server on port {redis_port}")

    prefect = str(BIN / "prefect")
    server_env = (
        env
        | prefect_redis_environment(redis_port)
        | {
            "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url,
            "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT10M",
        }
    )
    api_urls = [f"http://127.0.0.1:{port}/api" for port in api_ports]
    apis = []
    for n, port in enumerate(api_ports, 1):
        api = procs.spawn(
            f"prefect-api-{n}",
            [prefect, "server", "start", "--no-services", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            server_env | own_state(state, f"prefect-api-{n}"),
        )
        # The first migrates the database; the second starts on a migrated one.
        procs.wait_http(api, f"{api_urls[n - 1]}/health", 240)
        apis.append(api)
    services = procs.spawn(
        "prefect-services",
        [prefect, "server", "services", "start"],
        server_env | own_state(state, "prefect-services"),
    )
    sandbox_proc = procs.spawn(
        "sandbox",
        [sys.executable, "-m", "riposte.sandbox", "--host", "127.0.0.1"]
        + ["--port", str(sandbox_port)],
        env,
    )
    procs.wait_http(sandbox_proc, f"http://127.0.0.1:{sandbox_port}/_sandbox/health", 60)
    say(f"2 Prefect API servers on PostgreSQL and Redis at {', '.join(api_urls)}, and services")

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

    intake_ports = [free_port(), free_port()]
    intakes = [
        procs.spawn(
            f"intake-{n}",
            [sys.executable, "-m", "riposte.deployments.intake"],
            env
            | own_state(state, f"intake-{n}")
            | {
                "PREFECT_API_URL": api_urls[n - 1],
                "RIPOSTE_INTAKE_PORT": str(port),
                "RIPOSTE_INTAKE_JOURNAL": str(state / f"intake-{n}" / "journal"),
            },
        )
        for n, port in enumerate(intake_ports, 1)
    ]
    intake_urls = [f"http://127.0.0.1:{port}" for port in intake_ports]
    for proc, url in zip(intakes, intake_urls, strict=True):
        procs.wait_http(proc, f"{url}/health", 90)
    say(f"2 intakes at {', '.join(intake_urls)}, one on each API server")
    parts = {p.name: p.popen.pid for p in [*apis, services, redis_proc, sandbox_proc, *intakes]}
    with contextlib.suppress(OSError, ValueError):
        parts["postgres"] = int((postgres.data / "postmaster.pid").read_text().split()[0])
    return Stack(
        env, api_urls, SandboxClient(sandbox_url), intake_urls, hmac_key, redis_port, parts
    )


def start_worker(procs: Processes, stack: Stack, state: Path, limit: int) -> Proc:
    """One more process worker on the pool, on the next API server, with its own state."""
    n = len(stack.workers) + 1
    worker = procs.spawn(
        f"worker-{n}",
        [str(BIN / "prefect"), "worker", "start", "--pool", "riposte", "--type", "process"]
        + ["--name", f"scale-worker-{n}", "--limit", str(limit)],
        stack.env
        | own_state(state, f"worker-{n}")
        | {"PREFECT_API_URL": stack.api_urls[(n - 1) % len(stack.api_urls)]},
    )
    stack.workers.append(worker)
    stack.parts[worker.name] = worker.popen.pid
    wait_until(f"{n} worker(s) online in pool riposte", lambda: online_workers() >= n, 120, 1)
    return worker


def run(
    args: argparse.Namespace,
    procs: Processes,
    outcome: Outcome,
    state: Path,
    cleanup: list[Callable[[], None]],
) -> None:
    """The stack, then three bursts: ``args.compare_alerts`` with one worker, then with two
    (throughput, 1 vs 2, on the same burst), then ``args.alerts`` with two workers of which one
    is SIGKILLed in the middle (nothing lost or doubled)."""
    busy_at_start = machine_busy_seconds()
    redis_port = free_port()
    stack = start_stack(procs, state, cleanup, redis_port)
    start_worker(procs, stack, state, args.worker_limit)
    burst(args, stack, outcome, Phase("one worker", args.compare_alerts))
    start_worker(procs, stack, state, args.worker_limit)
    burst(args, stack, outcome, Phase("two workers", args.compare_alerts))
    burst(args, stack, outcome, Phase("two workers, one killed", args.alerts), procs=procs)

    outcome.machine_busy = machine_busy_seconds() - busy_at_start
    for name, pid in stack.parts.items():
        if name not in outcome.cpu:  # the killed worker's was read at the kill
            outcome.cpu[name] = cpu_seconds(pid)
    own = os.times()
    outcome.cpu["scale/run.py (senders, checks)"] = own.user + own.system
    outcome.redis_commands, outcome.redis_keys = redis_use(redis_port)
    runs = response_runs()
    outcome.run_states = dict(Counter(r.state.name if r.state else "none" for r in runs))
    outcome.not_completed = [
        f"{r.name} {r.state.name if r.state else 'none'}"
        for r in runs
        if r.state is None or not r.state.is_completed()
    ]


def _cpu_now(stack: Stack, killed: dict[str, float]) -> dict[str, float]:
    """Each part's CPU seconds so far; the killed worker's as read just before its kill."""
    return {
        name: killed[name] if name in killed else cpu_seconds(pid)
        for name, pid in stack.parts.items()
    }


def _claimed(workers: list[Proc]) -> dict[str, Counter[str]]:
    return {w.name: claimed_runs(w.log_path) for w in workers}


def burst(
    args: argparse.Namespace,
    stack: Stack,
    outcome: Outcome,
    phase: Phase,
    procs: Processes | None = None,
) -> None:
    """Post ``phase.alerts`` signed alerts alternating between the intakes and wait for the
    drain; with ``procs``, SIGKILL the worker with most progress (and its flow-run processes)
    after ``args.kill_at`` of them were posted, and follow what it had in flight."""
    outcome.phases.append(phase)
    alerts = make_alerts(phase.alerts)
    stack.sandbox.load(alerts)
    ids = [a["id"] for a in alerts]
    # Each alert signed, to replica index % 2, like a sender that honours 503 and Retry-After
    # (5 s at most) and retries timeouts, 20 tries at most.
    sender = AlertSender(
        stack.intake_urls,
        hmac_key=stack.hmac_key,
        tries=20,
        pause_after_error=1,
        most_retry_after=5,
        timeout=60,
    )
    say(f"{phase.name}: {phase.alerts} signed alerts from {args.senders} senders, both intakes")
    cpu_before = _cpu_now(stack, outcome.cpu)
    busy_before = machine_busy_seconds()
    claimed_before = _claimed(stack.workers)
    flight_alerts: dict[str, set[str]] = {}
    victim: Proc | None = None
    started = time.monotonic()
    pool = ThreadPoolExecutor(args.senders)
    try:
        futures = [pool.submit(sender.post, a, i) for i, a in enumerate(alerts)]
        if procs is not None:
            kill_after = int(phase.alerts * args.kill_at)
            wait_until("the burst posted to the kill", lambda: sender.posted >= kill_after, 300)
            victim = choose_victim(stack.workers, timeout=60)
            flight_alerts, kill_time = kill(procs, victim, outcome, started)
            say(
                f"SIGKILLed {victim.name} and its {outcome.killed_processes} flow-run "
                f"process(es) after {sender.posted} posts; its runs in flight: "
                f"{ {state: len(runs) for state, runs in outcome.in_flight.items()} }, "
                f"{outcome.steps_done_before_kill} task run(s) finished in them"
            )
        for future in futures:
            future.result(timeout=max(1.0, args.timeout - (time.monotonic() - started)))
    finally:
        sender.stopped = True  # a failure above: the senders give up at their next retry
        pool.shutdown(wait=True, cancel_futures=True)
    phase.posted_after = sender.last_post - started
    phase.statuses = dict(sender.statuses)
    say(f"{phase.name}: all posted after {phase.posted_after:.1f}s: statuses {phase.statuses}")

    drain(args, phase, stack, ids, started)
    cpu_after = _cpu_now(stack, outcome.cpu)
    busy = machine_busy_seconds() - busy_before
    phase.machine_share = busy / ((time.monotonic() - started) * len(os.sched_getaffinity(0)))
    count_answers(phase, stack.sandbox, ids)
    phase.cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    with get_client_sync() as client:
        for worker, runs in _claimed(stack.workers).items():
            new = runs - claimed_before.get(worker, Counter())
            answered = 0
            for run_id, times in new.items():
                answered += times * len(alerts_of(client.read_flow_run(UUID(run_id))))
            phase.shares[worker] = (new.total(), answered)
    say(
        f"{phase.name}: last ticket after {phase.last_ticket_after:.1f}s "
        f"({phase.throughput:.1f} alerts/s), shares {phase.shares}"
    )
    if victim is not None:
        follow_in_flight(stack, victim, flight_alerts, kill_time, outcome)


def kill(
    procs: Processes, victim: Proc, outcome: Outcome, started: float
) -> tuple[dict[str, set[str]], float]:
    """Freeze the victim and its flow-run processes, read what it had in flight, SIGKILL them."""
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
    return flight_alerts, kill_time


def follow_in_flight(
    stack: Stack,
    victim: Proc,
    flight_alerts: dict[str, set[str]],
    kill_time: float,
    outcome: Outcome,
) -> None:
    """What became of each run the victim had in flight: crashed and run again elsewhere?"""
    for run_id, run_alerts in flight_alerts.items():
        others = [w for w in stack.workers if w is not victim and claimed_runs(w.log_path)[run_id]]
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


def get_client_sync() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def drain(
    args: argparse.Namespace,
    phase: Phase,
    stack: Stack,
    ids: list[str],
    started: float,
) -> None:
    """Wait (bounded) until every alert has its ticket and every response run has finished; a
    Crashed run that the automation will run again is not finished."""
    from riposte.deployments.rollout import CRASH_RERUNS

    keys = {correlation(i) for i in ids}
    deadline = started + args.timeout
    have = 0
    sandbox = stack.sandbox
    while time.monotonic() < deadline:
        phase.most_locks = max(phase.most_locks, locks_held(stack.redis_port))
        tickets = sandbox.tickets()
        count = sum(1 for k in keys if tickets[k])
        if count > have:
            have = count
            phase.last_ticket_after = time.monotonic() - started
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
                phase.drained_after = time.monotonic() - started
                phase.complete = True
                break
        time.sleep(1)


def count_answers(phase: Phase, sandbox: SandboxClient, ids: list[str]) -> None:
    """Tickets and messages per alert, a few seconds after the drain: anything still in flight
    (a late duplicate) would show by then."""
    time.sleep(3)
    keys = {correlation(i) for i in ids}
    tickets = sandbox.tickets()
    messages = messages_per_alert(sandbox, ids)
    phase.lost = sum(1 for k in keys if not tickets[k])
    phase.duplicates = sum(tickets[k] - 1 for k in keys if tickets[k] > 1)
    phase.messages = sum(messages.values())
    phase.duplicate_messages = sum(n - 1 for n in messages.values() if n > 1)
