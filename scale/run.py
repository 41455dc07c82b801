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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS_BLOCK = "riposte-scale-results"
RESPONSE_DEPLOYMENTS = ("respond_to_alert/respond", "respond_batch/respond-batch")
# Heartbeats every 30 s (prefect.yaml), a run silent for 90 s is lost; locks of a killed run
# lapse after 60 s, before its run is given back, so the re-run never waits for a dead holder.
LOST_RUN_SECONDS = 90
LOCK_HOLD_SECONDS = 60
# The sandbox does not rate-limit like the vendors: the test measures Riposte, not budgets.
GENEROUS_RATE = "100/s"
RATE_APIS = ("graph", "mde", "mdebatch", "mdca", "arm", "servicenow", "jira", "slack", "teams")


class ScaleTestError(RuntimeError):
    """A part did not start or finish in its bounded time; the message says which and where."""


def say(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise ScaleTestError(f"{what}: not done in {timeout:.0f}s")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


# --- processes --------------------------------------------------------------------------------


def become_subreaper() -> None:
    """Orphans of our children (flow-run processes of a killed worker, the postmaster) become
    ours instead of init's, so that the final sweep finds and stops them."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and everything below it: its own, its finished children's (once
    reaped) and its live descendants'."""
    ticks = 0
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy since boot (every process, ours or not)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Processes:
    logs: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc = Proc(name, popen, log_path, log)
        self.started.append(proc)
        return proc

    def wait_http(self, proc: Proc, url: str, timeout: float) -> None:
        def up() -> bool:
            if not proc.alive():
                raise ScaleTestError(f"{proc.name} exited early; see {proc.log_path}")
            return answers(url)

        wait_until(f"{proc.name} at {url} (log {proc.log_path})", up, timeout)

    def freeze_tree(self, proc: Proc) -> list[int]:
        """SIGSTOP ``proc`` (first, so that it starts nothing new) and every process it started:
        nothing of it moves any more, so what it had in flight can be read exactly."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.popen.pid, signal.SIGSTOP)
        tree = descendants(proc.popen.pid)
        signal_all(tree, signal.SIGSTOP)
        return tree

    def kill_frozen(self, proc: Proc, tree: list[int]) -> None:
        """SIGKILL a frozen worker and its flow-run processes, as a lost machine would."""
        signal_all([proc.popen.pid, *tree], signal.SIGKILL)
        proc.popen.wait(timeout=10)
        reap(tree)

    def stop(self, proc: Proc, grace: float = 15) -> None:
        tree = descendants(proc.popen.pid) if proc.alive() else []
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        signal_all(tree, signal.SIGKILL)
        proc.log.close()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                say(f"stopping {proc.name}: {exc}")
        self.started.clear()


def reap(pids: list[int], timeout: float = 10) -> None:
    """Collect the exit of killed orphans (ours, as subreaper), so they leave no zombies."""
    deadline = time.monotonic() + timeout
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (still the worker's child) or already reaped
                waiting.discard(pid)
                continue
            if done:
                waiting.discard(pid)
        time.sleep(0.1)


def sweep_leftovers() -> None:
    """Whatever is still running below us (orphans adopted as subreaper): TERM, then KILL."""
    left = descendants(os.getpid())
    if not left:
        return
    say(f"stopping {len(left)} leftover process(es)")
    signal_all(left, signal.SIGTERM)
    reap(left, timeout=10)
    signal_all(descendants(os.getpid()), signal.SIGKILL)
    reap(left, timeout=5)


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def ensure_postgres_installed() -> Path:
    """PostgreSQL's binaries, installed from the Debian archive first when absent."""
    found = postgres_bin()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise ScaleTestError("PostgreSQL is not installed: apt-get install postgresql (as root)")
    say("installing PostgreSQL (apt-get) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv, timeout in (
        (["apt-get", "update"], 300),
        (["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], 900),
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ScaleTestError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    found = postgres_bin()
    if found is None:
        raise ScaleTestError("apt-get installed postgresql but no pg_ctl under /usr/lib/postgresql")
    return found


@dataclass
class Postgres:
    """A throwaway cluster of our own: own folder, own port, trust auth on loopback only."""

    bindir: Path
    port: int
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="riposte-pg-")))
    started: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://riposte@127.0.0.1:{self.port}/prefect"

    def _run(self, argv: list[str], timeout: float) -> None:
        # initdb and postgres refuse to run as root: run them as the `postgres` user then.
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=self.folder, **as_user
        )
        if done.returncode != 0:
            raise ScaleTestError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-800:]}")

    def start(self) -> None:
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ScaleTestError("no `postgres` user to run PostgreSQL as") from None
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "riposte",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            120,
        )
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.folder}",
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=200",
                # A test database: durability is not what is measured.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            90,
        )
        self.started = True
        self._run(
            [
                str(self.bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "riposte",
                "prefect",
            ],
            60,
        )

    def stop(self) -> None:
        if self.started:
            try:
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w"]
                    + ["-t", "30", "stop"],
                    45,
                )
            except (ScaleTestError, subprocess.TimeoutExpired) as exc:
                say(f"pg_ctl stop: {exc}; killing the postmaster")
                with contextlib.suppress(OSError, ValueError):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)


def ensure_asyncpg() -> str:
    """Prefect talks to PostgreSQL through asyncpg: install it only if Prefect came without."""
    if importlib.util.find_spec("asyncpg") is not None:
        return "asyncpg: present"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "asyncpg"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise ScaleTestError(f"pip install asyncpg failed: {done.stderr.strip()[-500:]}")
    return "asyncpg: installed"


# --- alerts -------------------------------------------------------------------------------------


def make_alerts(count: int) -> list[dict[str, Any]]:
    from riposte.sandbox.samples import sample_graph_alerts

    template = sample_graph_alerts(datetime.now(UTC))[0]
    run_tag = secrets.token_hex(3)
    alerts = []
    for i in range(count):
        alert = dict(template)
        alert["id"] = f"scale-{run_tag}-{i:05d}"
        alert["incidentId"] = str(700000 + i)
        alerts.append(alert)
    return alerts


def correlation(alert_id: str) -> str:
    return f"riposte-graph-{alert_id}"


@dataclass
class Burst:
    intakes: list[str]
    hmac_key: str
    statuses: Counter[int] = field(default_factory=Counter)
    posted: int = 0
    stopped: bool = False
    last_post: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def post(self, index: int, alert: dict[str, Any]) -> int:
        """Post one signed alert to replica ``index % 2``, like a sender that honours 503 and
        Retry-After and retries timeouts (bounded). Returns the last status, -1 for none."""
        from riposte.deployments.signing import SIGNATURE_HEADER, sign

        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=60)
        client: httpx.Client = self._local.client
        url = f"{self.intakes[index % len(self.intakes)]}/alerts/graph"
        body = json.dumps(alert).encode()
        status = -1
        for _ in range(20):
            if self.stopped:
                break
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(body, [self.hmac_key.encode()]),
            }
            try:
                r = client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                status = -1
                time.sleep(1)
                continue
            status = r.status_code
            if status != 503:
                break
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 5))
        with self._lock:
            self.statuses[status] += 1
            self.posted += 1
            self.last_post = time.monotonic()
        return status


# --- Prefect --------------------------------------------------------------------------------------


def flow_run_states(run_id: str) -> list[tuple[str, float]]:
    """The run's states, oldest first, each with its time (epoch seconds)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(run_id))
    return [
        (s.name or s.type.value, s.timestamp.timestamp())
        for s in sorted(states, key=lambda s: s.timestamp)
    ]


def response_runs() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with get_client(sync_client=True) as client:
        ids = [client.read_deployment_by_name(name).id for name in RESPONSE_DEPLOYMENTS]
        runs: list[Any] = []
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=ids)),
                limit=200,
                offset=offset,
            )
            runs.extend(page)
            if len(page) < 200:
                return runs
            offset += 200


def pause_schedules() -> list[str]:
    """Pause the scheduled deployments and drop the runs they already scheduled: the burst and
    the recovery are what this test measures, not polls (bench does the same)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = []
    with get_client(sync_client=True) as client:
        scheduled = [d for d in client.read_deployments() if d.schedules]
        for deployment in scheduled:
            client.pause_deployment(deployment.id)
            paused.append(deployment.name)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[d.id for d in scheduled]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
                ),
            )
        )
        for run in runs:
            client.delete_flow_run(run.id)
    return paused


def online_workers() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool("riposte")
    return sum(1 for w in workers if str(w.status).upper().endswith("ONLINE"))


SUBMITTED = re.compile(r"submitting flow run '([0-9a-f-]{36})'")
ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")


def claimed_runs(log_path: Path) -> Counter[str]:
    """The flow runs a worker ran (how many times each), from its log: both workers try every
    scheduled run, and the one whose Pending the server refuses logs an aborted submission."""
    claimed: Counter[str] = Counter()
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return claimed
    for line in text.splitlines():
        if match := SUBMITTED.search(line):
            claimed[match.group(1)] += 1
        elif match := ABORTED.search(line):
            claimed[match.group(1)] -= 1
    return +claimed


# --- the sandbox -------------------------------------------------------------------------------


class Sandbox:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def load(self, alerts: list[dict[str, Any]]) -> None:
        for start in range(0, len(alerts), 250):
            self.http.post(
                "/_sandbox/graph/alerts", json=alerts[start : start + 250]
            ).raise_for_status()

    def tickets(self) -> Counter[str]:
        records = self.http.get("/_sandbox/servicenow/incidents").json()
        return Counter(r["record"]["correlation_id"] for r in records)

    def messages_per_alert(self, alert_ids: list[str]) -> Counter[str]:
        messages = self.http.get("/_sandbox/slack/messages").json()
        found: Counter[str] = Counter()
        for message in messages:
            # A message names its alert several times (text, links): count it once.
            found.update(set(re.findall(r"scale-[0-9a-f]{6}-\d{5}", json.dumps(message))))
        wanted = set(alert_ids)
        return Counter({k: v for k, v in found.items() if k in wanted})


# --- the test ------------------------------------------------------------------------------------


@dataclass
class Outcome:
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


def run(args: argparse.Namespace, procs: Processes, outcome: Outcome, state: Path) -> None:
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
            env | {"RIPOSTE_INTAKE_PORT": str(port)},
        )
        for n, port in enumerate(intake_ports, 1)
    ]
    intake_urls = [f"http://127.0.0.1:{port}" for port in intake_ports]
    for proc, url in zip(intakes, intake_urls, strict=True):
        procs.wait_http(proc, f"{url}/health", 90)
    wait_until("two workers online in pool riposte", lambda: online_workers() >= 2, 120, 1)
    say(f"2 workers on pool riposte, 2 intakes at {', '.join(intake_urls)}")

    sandbox = Sandbox(sandbox_url)
    alerts = make_alerts(args.alerts)
    sandbox.load(alerts)
    ids = [a["id"] for a in alerts]
    burst = Burst(intake_urls, hmac_key)
    say(f"burst: {args.alerts} signed alerts from {args.senders} senders, both replicas ...")

    started = time.monotonic()
    pool = ThreadPoolExecutor(args.senders)
    try:
        futures = [pool.submit(burst.post, i, a) for i, a in enumerate(alerts)]
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
        outcome.steps_cached_in_rerun += cached


TASK_FINISHED = re.compile(
    r"Task run '[^']* graph-(scale-[0-9a-f]{6}-\d{5})[^']*' - Finished in state (\w+)"
)


def steps_in_log(log_path: Path, alert_ids: set[str]) -> Counter[str]:
    """How many steps of these alerts a worker finished, by final state (Completed, Cached...),
    from its log: immediate, where the API records task run states a few seconds later."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for match in TASK_FINISHED.finditer(log_path.read_text(errors="replace")):
            if match.group(1) in alert_ids:
                found[match.group(2)] += 1
    return found


def alerts_of(run: Any) -> set[str]:
    """The alert ids a response run answers, from its parameters."""
    params = run.parameters or {}
    if "alerts" in params:
        return {a["alert_id"] for a in params["alerts"]}
    return {params["alert_id"]} if "alert_id" in params else set()


def runs_in_flight(worker: Proc) -> dict[str, list[Any]]:
    """The worker's flow runs that are not finished, by state type."""
    from prefect.client.orchestration import get_client

    found: dict[str, list[Any]] = {}
    with get_client(sync_client=True) as client:
        for run_id in claimed_runs(worker.log_path):
            run = client.read_flow_run(UUID(run_id))
            if run.state is not None and not run.state.is_final():
                found.setdefault(run.state.type.value, []).append(run)
    return found


def choose_victim(workers: list[Proc], timeout: float) -> Proc:
    """The worker whose Running flow runs have finished the most steps, waiting (bounded) until
    some have: a run killed half-way shows that its finished steps come back Cached."""

    def progress(worker: Proc) -> int:
        running = runs_in_flight(worker).get("RUNNING", [])
        alerts = set().union(*(alerts_of(r) for r in running)) if running else set()
        return steps_in_log(worker.log_path, alerts)["Completed"]

    deadline = time.monotonic() + timeout
    while True:
        done = [(progress(w), w) for w in workers]
        steps, worker = max(done, key=lambda d: d[0])
        if steps > 0 or time.monotonic() >= deadline:
            return worker
        time.sleep(1)


def drain(
    args: argparse.Namespace, outcome: Outcome, sandbox: Sandbox, ids: list[str], started: float
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
    messages = sandbox.messages_per_alert(ids)
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
        f"again to Completed by the other worker | {outcome.recovered} of {in_flight}, "
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


cleanup: list[Callable[[], None]] = []


def main() -> int:
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
    args = parser.parse_args()

    began = time.monotonic()
    state = REPO / ".riposte" / "scale"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    procs = Processes(state / "logs")
    outcome = Outcome(alerts=args.alerts)
    become_subreaper()

    def interrupted(signum: int, _: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    failure: str | None = None
    try:
        run(args, procs, outcome, state)
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
    problems = []
    if failure:
        problems.append(failure)
    if not outcome.complete:
        problems.append(f"not drained within {args.timeout:.0f}s of the first POST")
    if outcome.lost or outcome.duplicates:
        problems.append(f"{outcome.lost} lost, {outcome.duplicates} duplicate ticket(s)")
    if outcome.messages != outcome.alerts or outcome.duplicate_messages:
        problems.append(
            f"{outcome.messages} messages for {outcome.alerts} alerts "
            f"({outcome.duplicate_messages} duplicates)"
        )
    in_flight = sum(len(v) for v in outcome.in_flight.values())
    if not failure and (in_flight == 0 or outcome.recovered < in_flight):
        problems.append(
            f"{outcome.recovered} of the {in_flight} runs in flight at the kill were recovered"
        )
    if outcome.not_completed:
        problems.append(f"runs not Completed: {', '.join(outcome.not_completed[:10])}")
    if problems:
        print(f"\nFAILED: {'; '.join(problems)} (logs in {procs.logs})")
        return 1
    print(f"\nOK: every alert answered exactly once (logs in {procs.logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
