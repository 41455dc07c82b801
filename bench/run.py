"""Benchmark of the local stack: single-alert latency and a burst of alerts, against a raw baseline.

Starts its own local stack (Prefect on SQLite, sandbox, intake, responder) on ports apart from
`make run`'s, in a fresh state folder, with `bench/policy.yaml` (every alert gets a ticket), then:
1. sends alerts one at a time and times POST -> ticket created;
2. posts a burst from concurrent senders and times until the last ticket exists, counting lost
   alerts (no ticket) and duplicate tickets;
3. makes the same HTTP calls to the same simulators directly with httpx, with the same
   concurrency and no orchestration, as the baseline the burst is compared to.
Prints a table. A benchmark, not a test: it always prints what it saw. The drain's deadline is
counted from the end of posting; the sandbox is never reset while a burst's run still answers;
a phase that did not finish says so (tickets so far, the runs by state, their first errors) and
the bench exits 1, instead of printing figures of nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from riposte.sandbox.driver import (
    AlertSender,
    SandboxClient,
    adopt_stack_credential,
    correlation,
    graph_alerts,
    stack_environment,
)

REPO = Path(__file__).resolve().parent.parent
FIRST_PORT = 4300  # Prefect; the intake 4310, the sandbox 4320


def configure_environment(home: Path) -> None:
    """Before anything imports prefect: the bench stack's ports, state folder and policy."""
    os.environ.update(stack_environment(home, FIRST_PORT))
    os.environ.update(
        {
            "RIPOSTE_POLICY_FILE": str(REPO / "bench" / "policy.yaml"),
            # The bench measures Riposte against the sandbox, not the vendors' budgets: the
            # per-API rate limits are wide open (still created and acquired, as in production).
            **{
                f"RIPOSTE_RATE_{api}": "100000/s"
                for api in (
                    *("GRAPH", "MDE", "MDEBATCH", "MDCA", "ARM"),
                    *("SERVICENOW", "JIRA", "SLACK", "TEAMS"),
                )
            },
        }
    )


def make_alerts(count: int, tag: str) -> list[dict[str, Any]]:
    return graph_alerts(
        [f"bench-{tag}-{i:05d}-{os.urandom(3).hex()}" for i in range(count)], 900000
    )


def sender(intake: str, token: str, timeout: float) -> AlertSender:
    """A sender that honours 503 + Retry-After and retries timeouts at once, 30 tries at most."""
    return AlertSender(intake, token=token, tries=30, pause_after_error=0.0, timeout=timeout)


def single_latency(sandbox: SandboxClient, intake: str, token: str, count: int) -> list[float]:
    alerts = make_alerts(count, "single")
    sandbox.load(alerts)
    latencies = []
    post = sender(intake, token, timeout=60)
    for alert in alerts:
        started = time.monotonic()
        post.post(alert)
        key = correlation(alert["id"])
        deadline = started + 60
        while time.monotonic() < deadline:
            if sandbox.tickets()[key]:
                latencies.append(time.monotonic() - started)
                break
            time.sleep(0.01)
        else:
            latencies.append(float("nan"))
    return latencies


def burst(
    sandbox: SandboxClient, intake: str, token: str, count: int, senders: int, timeout: float
) -> dict[str, Any]:
    """Post the burst, then wait for its tickets: ``timeout`` seconds counted from the end of
    posting (posting itself can take minutes when the intake holds its senders)."""
    alerts = make_alerts(count, "burst")
    sandbox.load(alerts)
    keys = {correlation(a["id"]) for a in alerts}
    since = datetime.now(UTC) - timedelta(seconds=1)
    started = time.monotonic()
    post = sender(intake, token, timeout=120)
    deliveries = post.post_all(alerts, senders)
    statuses = Counter(d.status for d in deliveries.values())
    posted = time.monotonic() - started
    deadline = time.monotonic() + timeout
    last_new = started
    seen: Counter[str] = Counter()
    while time.monotonic() < deadline:
        current = sandbox.tickets()
        if sum(1 for k in keys if current[k]) > sum(1 for k in keys if seen[k]):
            last_new = time.monotonic()
        seen = current
        if all(seen[k] for k in keys):
            break
        time.sleep(0.5)
    return {
        "keys": keys,
        "since": since,
        "posted_in": posted,
        "post_latencies": list(post.latencies),
        "statuses": dict(statuses),
        "drain": last_new - started,
        "waited": time.monotonic() - started,
        "tickets": sum(1 for k in keys if seen[k]),
        "complete": all(seen[k] for k in keys),
    }


def response_runs(since: datetime) -> list[Any]:
    """The response runs (tag `response`) due since ``since``: the burst's runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterTags,
    )

    from riposte.settings import RESPONSE_TAG

    runs: list[Any] = []
    wanted = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[RESPONSE_TAG]),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=since),
    )
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(flow_run_filter=wanted, limit=200, offset=len(runs))
            runs.extend(page)
            if len(page) < 200:
                return runs


def by_state(runs: list[Any]) -> dict[str, int]:
    return dict(Counter(run.state.name if run.state else "no state" for run in runs))


def first_errors(runs: list[Any], most: int = 3) -> list[str]:
    failed = [r for r in runs if r.state and r.state.type.value in ("FAILED", "CRASHED")]
    return [f"{r.name}: {(r.state.message or r.state.name)[:200]}" for r in failed[:most]]


def wait_quiet(since: datetime, timeout: float) -> list[Any]:
    """Wait until no response run since ``since`` is still to finish (``timeout`` at most);
    the runs as they are then."""
    deadline = time.monotonic() + timeout
    while True:
        runs = response_runs(since)
        if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(2)


def baseline(sandbox_url: str, count: int, workers: int) -> float:
    """The response's HTTP calls made directly: token, read alert, look up and create the
    incident, Slack, Teams, read alert, mark in progress, comment."""
    from riposte.deployments.local import sandbox_blocks

    blocks = sandbox_blocks(sandbox_url)
    creds = blocks["riposte-defender"]
    snow = blocks["riposte-servicenow"]
    slack = blocks["riposte-slack"].url.get_secret_value()  # type: ignore[attr-defined]
    teams = blocks["riposte-teams"].url.get_secret_value()  # type: ignore[attr-defined]
    sandbox = SandboxClient(sandbox_url)
    alerts = make_alerts(count, "raw")
    sandbox.load(alerts)
    with httpx.Client(timeout=60) as c:
        token = c.post(
            f"{creds.authority_host}/{creds.tenant_id}/oauth2/v2.0/token",  # type: ignore[attr-defined]
            data={
                "client_id": creds.client_id,  # type: ignore[attr-defined]
                "client_secret": creds.client_secret.get_secret_value(),  # type: ignore[attr-defined]
                "grant_type": "client_credentials",
                "scope": "https://graph.microsoft.com/.default",
            },
        ).json()["access_token"]
    graph = f"{creds.graph_base_url}/v1.0/security/alerts_v2"  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {token}"}
    snow_auth = (snow.username, snow.password.get_secret_value())  # type: ignore[attr-defined]
    table = f"{snow.instance_url}/api/now/table/incident"  # type: ignore[attr-defined]
    local = threading.local()

    def respond(alert: dict[str, Any]) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        c: httpx.Client = local.client
        key = correlation(alert["id"])
        c.get(f"{graph}/{alert['id']}", headers=auth).raise_for_status()
        c.get(table, params={"sysparm_query": f"correlation_id={key}"}, auth=snow_auth)
        c.post(
            table, json={"short_description": alert["title"], "correlation_id": key}, auth=snow_auth
        ).raise_for_status()
        c.post(slack, json={"text": alert["title"]}).raise_for_status()
        c.post(
            teams,
            json={
                "type": "message",
                "attachments": [
                    {
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "content": {"type": "AdaptiveCard", "version": "1.4", "body": []},
                    }
                ],
            },
        ).raise_for_status()
        c.get(f"{graph}/{alert['id']}", headers=auth).raise_for_status()
        c.patch(f"{graph}/{alert['id']}", json={"status": "inProgress"}, headers=auth)
        c.post(
            f"{graph}/{alert['id']}/comments",
            headers=auth,
            json={"@odata.type": "microsoft.graph.security.alertComment", "comment": key},
        )

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(respond, alerts))
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and every process below it, so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        used[child] = (int(fields[11]) + int(fields[12])) / ticks

    def below(candidate: int) -> bool:
        while candidate > 1:
            if candidate == pid:
                return True
            candidate = parents.get(candidate, 0)
        return False

    return sum(seconds for child, seconds in used.items() if below(child))


def cpu_by_part(stack: Any) -> dict[str, float]:
    return {process.name: cpu_seconds(process.popen.pid) for process in stack.processes}


def task_runs_of(runs: list[Any]) -> int:
    """How many task runs the Prefect server holds for ``runs``."""
    from prefect.client.orchestration import get_client

    ids = [str(run.id) for run in runs]
    total = 0
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), 200):
            answer = client.request(
                "POST",
                "/task_runs/count",
                json={"flow_runs": {"id": {"any_": ids[start : start + 200]}}},
            )
            total += int(answer.json())
    return total


# The Prefect database's tables that a response writes rows to.
WRITTEN_TABLES = (
    "flow_run",
    "flow_run_state",
    "task_run",
    "task_run_state",
    "log",
    "artifact",
    "events",
    "event_resources",
)


def database_rows(home: Path) -> dict[str, int]:
    """Rows in each of `WRITTEN_TABLES` of the bench's SQLite Prefect database, read-only."""
    import sqlite3

    path = home / "prefect" / "prefect.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as db:
        present = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        return {
            table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in WRITTEN_TABLES
            if table in present
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=50, help="alerts sent one at a time")
    parser.add_argument("--burst", type=int, default=1000, help="alerts in the burst")
    parser.add_argument("--senders", type=int, default=20, help="concurrent senders in the burst")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds to wait for the drain, counted from the end of posting",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=600,
        help="seconds to wait, after the drain, for the burst's runs to finish before the sandbox"
        " is reset for the baseline (never reset while a run still answers)",
    )
    args = parser.parse_args()

    home = REPO / ".riposte" / "bench"
    shutil.rmtree(home, ignore_errors=True)
    configure_environment(home)
    adopt_stack_credential()

    from riposte.deployments.stack import LocalStack
    from riposte.settings import get_settings

    settings = get_settings()
    stack = LocalStack(settings, say=lambda text: print(text, file=sys.stderr))
    try:
        stack.start()
        token = stack.intake_token()
        sandbox = SandboxClient(settings.sandbox_url)
        print(f"single alerts: sending {args.single} one at a time ...", file=sys.stderr)
        latencies = single_latency(sandbox, settings.intake_url, token, args.single)
        print(f"burst: {args.burst} alerts from {args.senders} senders ...", file=sys.stderr)
        cpu_before = cpu_by_part(stack)
        rows_before = database_rows(home)
        result = burst(sandbox, settings.intake_url, token, args.burst, args.senders, args.timeout)
        print("burst: waiting for its runs to finish ...", file=sys.stderr)
        runs = wait_quiet(result["since"], args.quiet_timeout)
        still = [r for r in runs if not (r.state and r.state.is_final())]
        cpu_after = cpu_by_part(stack)
        rows_after = database_rows(home)
        # Counted again once the runs are done: an alert still without a ticket now is lost.
        final = sandbox.tickets()
        lost = sum(1 for k in result["keys"] if not final[k])
        duplicates = sum(final[k] - 1 for k in result["keys"] if final[k] > 1)
        task_runs = task_runs_of(runs)
        responder = next(p for p in stack.processes if p.name == "served-flows")
        rss = peak_rss_mb(responder.popen.pid)
        if still:
            # Resetting now would pull the alerts from under runs that still answer them.
            print(f"sandbox NOT reset: {len(still)} runs still answering", file=sys.stderr)
        else:
            sandbox.reset()
        print("baseline: the same calls with httpx only ...", file=sys.stderr)
        raw = baseline(settings.sandbox_url, args.burst, 16)
    finally:
        stack.stop()

    complete = result["complete"]
    raw_rate = args.burst / raw
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    unanswered = sum(1 for v in latencies if v != v)
    print()
    print(f"| measure (burst of {args.burst}) | Riposte | raw httpx baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| single alert, POST -> ticket ({len(latencies)} alerts, one at a time) | p50 "
        f"{percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, max "
        f"{max(latencies):.2f} s"
        + (f" ({unanswered} without a ticket within 60 s)" if unanswered else "")
        + " | | |"
    )
    if complete:
        print(
            f"| time until the last ticket exists | {result['drain']:.1f} s | {raw:.1f} s | "
            f"{result['drain'] / raw:.1f}x |"
        )
        print(f"| alerts/s | {args.burst / result['drain']:.1f} | {raw_rate:.1f} | |")
    else:
        print(
            f"| time until the last ticket exists | NOT DRAINED: {result['tickets']} of "
            f"{args.burst} tickets after {result['waited']:.0f} s ({args.timeout:.0f} s after "
            f"the end of posting) | {raw:.1f} s | n/a |"
        )
        print(f"| alerts/s | n/a | {raw_rate:.1f} | |")
    print(f"| posted in | {result['posted_in']:.1f} s (statuses {result['statuses']}) | | |")
    posts = result["post_latencies"]
    print(
        f"| POST latency under the burst ({len(posts)} requests) | p50 "
        f"{1000 * percentile(posts, 0.5):.0f} ms, p95 {1000 * percentile(posts, 0.95):.0f} ms, "
        f"p99 {1000 * percentile(posts, 0.99):.0f} ms, max {1000 * max(posts, default=0):.0f} ms "
        "| | |"
    )
    print(f"| alerts lost (no ticket once the runs finished) | {lost} | | |")
    print(f"| duplicate tickets | {duplicates} | | |")
    print(f"| the burst's response runs, by state | {by_state(runs)} | | |")
    print(
        f"| flow runs / task runs per alert | {len(runs) / args.burst:.2f} / "
        f"{task_runs / args.burst:.1f} | | |"
    )
    written = {t: rows_after.get(t, 0) - rows_before.get(t, 0) for t in rows_after}
    print(
        f"| Prefect database rows written per alert | {sum(written.values()) / args.burst:.1f}: "
        + ", ".join(
            f"{table} {count / args.burst:.1f}"
            for table, count in sorted(written.items(), key=lambda item: -item[1])
            if count
        )
        + " | | |"
    )
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    parts = ", ".join(
        f"{name} {1000 * seconds / args.burst:.0f}"
        for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])
    )
    print(
        "| CPU ms per alert, by part (burst until its runs finished; the SQLite database "
        "works inside the Prefect server's process) | "
        f"{1000 * sum(cpu.values()) / args.burst:.0f}: {parts} | | |"
    )
    print(f"| responder peak RSS | {rss:.0f} MB | | |")
    errors = first_errors(runs)
    if errors:
        print()
        print("first errors of the burst's runs:")
        for line in errors:
            print(f"  {line}")
    if still:
        print()
        print(
            f"{len(still)} of the burst's runs had not finished {args.quiet_timeout:.0f} s after"
            " the drain; the baseline ran beside them, on a sandbox that was not reset."
        )
    return 0 if complete and not still else 1


if __name__ == "__main__":
    sys.exit(main())
